#!/usr/bin/env bash
# Collect one probe corpus on every GPU of this machine, one shard per GPU, then merge.
#   tools/shards.sh MODEL DATA.jsonl OUT_PREFIX [extra collect options …]
# e.g. tools/shards.sh deepseek-r1-distill-qwen-1.5b gsm8k/train.jsonl runs/r1 --limit 4000 --max-tokens 8192
set -euo pipefail
model=$1 data=$2 out=$3
shift 3
gpus=$(nvidia-smi --list-gpus | wc -l)
for ((i = 0; i < gpus; i++)); do
    CUDA_VISIBLE_DEVICES=$i lynx-edge probe collect --model "$model" -d "$data" -o "$out-s$((i + 1))" \
        --shard "$((i + 1))/$gpus" "$@" > "$out-s$((i + 1)).log" 2>&1 &
done
wait
lynx-edge probe merge $(for ((i = 1; i <= gpus; i++)); do echo "$out-s$i"; done) -o "$out"
echo "merged $gpus shards into $out: now lynx-edge probe train $out -o probes/NAME && lynx-edge probe calibrate $out -p probes/NAME"
