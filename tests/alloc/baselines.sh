#!/bin/sh
# baselines.sh [BASE FT] -- the published lossy delta compressors (baselines.py: BitDelta, DARE,
# per-row k-means, quantized truncated SVD) on one base/fine-tune pair at each ratio R of RATIOS
# (default "16 32 64 128"), as a markdown table: | R | method | achieved | delta_err | gain |.
# achieved and delta_err are baselines.py's (total ratio stored, relative L2 error of the deltas).
# Without arguments the pair is charlm (../shared/data/charlm) and gain is the share of the
# fine-tune's gain on QA text that the reconstruction keeps, with L = ln(ppl_cand) of
# `tools/charlm.py eval FT CAND tests/alloc/qa_eval.txt`:
#     gain = (L(BASE) - L(reconstruction)) / (L(BASE) - L(FT))
# (1 = as good as the fine-tune, 0 = no better than the base; both ends measured, not assumed).
# With BASE FT (any safetensors pair, e.g. from tests/data/genmodel.py) gain is '-'.
# Reconstructions go to scratch/baselines/METHOD-R.safetensors (git-ignored); charlm takes under a
# second a row (12 s in all on 2 cores).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3
work=$root/scratch/baselines
ratios=${RATIOS:-16 32 64 128}
case $# in
0)
	base=$root/../shared/data/charlm/base.safetensors
	ft=$root/../shared/data/charlm/finetuned_qa.safetensors
	text=$root/tests/alloc/qa_eval.txt ;;
2)
	base=$1 ft=$2 text= ;;
*)
	echo "usage: baselines.sh [BASE FT]" >&2
	exit 2 ;;
esac
mkdir -p "$work"
lnppl() { # CAND: ln(ppl_cand) of CAND against FT on the QA text
	$py "$root/tools/charlm.py" eval "$ft" "$1" "$text" |
		awk '{ for (i = 1; i < NF; i++) if ($i == "ppl_cand") printf "%.9g\n", log($(i + 1)) }'
}
if [ -n "$text" ]; then
	l_base=$(lnppl "$base")
	l_ft=$(lnppl "$ft")
fi
echo "| R | method | achieved | delta_err | gain |"
echo "| --- | --- | --- | --- | --- |"
for r in $ratios; do
	for m in bitdelta dare kmeans svd; do
		out=$work/$m-$r.safetensors
		line=$($py "$root/tests/alloc/baselines.py" "$m" "$r" "$base" "$ft" -o "$out")
		gain=-
		if [ -n "$text" ]; then
			gain=$(awk -v l="$(lnppl "$out")" -v b="$l_base" -v f="$l_ft" \
				'BEGIN { printf "%.3f", (b - l) / (b - f) }')
		fi
		echo "$line" | awk -v g="$gain" '{
			for (i = 1; i < NF; i++) f[$i] = $(i + 1)
			printf "| %s | %s | %.2f | %.4f | %s |\n", f["ratio"], f["method"], f["achieved"],
			       f["delta_err"], g }'
	done
done
