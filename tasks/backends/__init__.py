"""Every backend, by the name recipes give in `backend:`. A new backend is a module here and a line below."""

from quantforge.tasks.backends import ipex, openvino, torchao
from quantforge.tasks.backends.base import Backend

BACKENDS: dict[str, Backend] = {
    "openvino": openvino.BACKEND,
    "torchao": torchao.BACKEND,
    "ipex": ipex.BACKEND,
}
