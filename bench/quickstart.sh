#!/usr/bin/env bash
# Times the README's Quick start: a fresh clone of this repository (HEAD, or the ref given), its five
# commands exactly as the README writes them, on stand-ins for what cannot be downloaded offline: a
# 400-photo UTKFace.tar.gz in UTKFace's naming and VGGFace2 weights of the real layout with random values.
# Usage: bash bench/quickstart.sh [REF]     (prints one line per step: exit code and wall-clock seconds)
set -u
repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
work=$(mktemp -d)
git clone -q "$repo" "$work/clone" && cd "$work/clone" && git checkout -q "${1:-HEAD}" || exit 1
uv sync --locked -q
export UV_CACHE_DIR="${UV_CACHE_DIR:-$(uv cache dir)}"  # kept: HOME moves below
export TORCH_HOME="$work/torch_home" HOME="$work/home"  # the README's ~/Downloads, inside the scratch folder
mkdir -p "$HOME/Downloads"
PYTHONPATH=tests uv run python - <<PY
import io, tarfile
from pathlib import Path
from dataset_archives import face_photo, jpeg_bytes
from face_match_age.network.weights import save_random_weights
from PIL import Image
from skimage import data

with tarfile.open("$HOME/Downloads/UTKFace.tar.gz", "w:gz") as tar:
    for n in range(400):  # UTKFace naming: age_gender_race_timestamp.jpg.chip.jpg, ages 1..95
        payload = jpeg_bytes(face_photo(n))
        info = tarfile.TarInfo(f"UTKFace/{(5 + 9 * n) % 95 + 1}_{n % 2}_{n % 5}_2017011617{n:07d}.jpg.chip.jpg")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
save_random_weights(Path("$TORCH_HOME/checkpoints/20180402-114759-vggface2.pt"))
Image.fromarray(data.astronaut()).save("person_young.jpg")
Image.fromarray(data.astronaut()).rotate(5).save("person_old.jpg")
PY
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
step() {
  local name=$1 start
  shift
  start=$(date +%s.%N)
  "$@" >"$work/$name.log" 2>&1
  echo "$name: exit $? in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s (output: $work/$name.log)"
}
step set-up-infer uv run python infer.py person_young.jpg person_old.jpg results/ --json
step prepare uv run python data_prep.py --dataset utkface --archive ~/Downloads/UTKFace.tar.gz --limit 300
step train uv run python train.py --data-dir data/UTKFace --max-epochs 2 --batch-size 32 --log-every-n-steps 1
step infer uv run python infer.py person_young.jpg person_old.jpg results/ --json
step evaluate uv run python evaluate.py age --data-dir data/UTKFace --out eval/age
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
