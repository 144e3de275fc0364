# MLflow tracking server with the Postgres driver and the S3 client its artifact store needs, and
# Flask-WTF, which `--app-name basic-auth` needs and MLflow does not install.
FROM python:3.11-slim
RUN pip install --no-cache-dir mlflow==3.17.2 psycopg2-binary==2.9.13 boto3==1.44.5 flask-wtf==1.3.0
COPY infra/mlflow-auth.ini /etc/mlflow/basic_auth.ini
ENTRYPOINT ["mlflow"]
