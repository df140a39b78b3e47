# One image for every Chorus process: agent workers, producers, Flower and the simulator.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 chorus
WORKDIR /app
COPY pyproject.toml README.md ./
COPY messages ./messages
COPY workers ./workers
COPY dispatcher ./dispatcher
COPY simulator ./simulator
RUN pip install --no-cache-dir .
USER chorus
CMD ["chorus", "--help"]
