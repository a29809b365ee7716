#!/bin/sh
# eval_alloc.sh BENCH_ALLOC charlm|1g [SPREAD] -- the allocation evidence, as a markdown table:
# at each total ratio (RATIOS, default "16 32 64"), uniform vs importance-ordered (1 - ZD of the
# fine-tuned weights, of the delta; on charlm also LIM, and "depth": deeper blocks first, the
# order measured by compressing one block at a time) vs the same scores reversed, every row
# planned by dq_plan at the ratios al_allocate gave (bench_alloc.c), with the achieved total
# ratio, the size-weighted mean output error of the matrices (as `deltafs info`), and on charlm
# the model's own output: KL divergence and top-1 agreement of the next-character distribution
# against the real fine-tune on QA text (tools/charlm.py eval; LIM from other QA text).
#   charlm: ../shared/data/charlm, a few seconds a row.
#   1g:     scratch/dq/{base,ft}.safetensors (tests/deltadq/meson.build says how to make them),
#           2-3 minutes a row on 2 cores.
# Work files go to scratch/alloc/ (git-ignored).
set -eu
bench=$1
model=$2
spread=${3:-0}
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3
work=$root/scratch/alloc
mkdir -p "$work"
case $model in
charlm)
	base=$root/../shared/data/charlm/base.safetensors
	ft=$root/../shared/data/charlm/finetuned_qa.safetensors
	$py "$root/tools/charlm.py" lim "$ft" "$root/tests/alloc/qa_calib.txt" -o "$work/lim.json" 2>/dev/null
	echo '{"blocks.0": 0, "blocks.1": 1, "blocks.2": 2, "blocks.3": 3}' > "$work/depth.json"
	scores="zd-ft zd-delta $work/lim.json $work/depth.json" ;;
1g)
	base=$root/scratch/dq/base.safetensors
	ft=$root/scratch/dq/ft.safetensors
	scores="zd-ft zd-delta" ;;
*)
	echo "usage: eval_alloc.sh BENCH_ALLOC charlm|1g [SPREAD]" >&2
	exit 2 ;;
esac

row() { # R ORDER SCORE
	out=$work/recon.safetensors
	if [ "$model" = charlm ]; then
		line=$("$bench" --spread "$spread" --ratio "$1" --order "$2" --score "$3" -o "$out" "$base" "$ft")
		ev=$($py "$root/tools/charlm.py" eval "$ft" "$out" "$root/tests/alloc/qa_eval.txt")
	else
		line=$("$bench" --spread "$spread" --ratio "$1" --order "$2" --score "$3" "$base" "$ft")
		ev="kl - top1 -"
	fi
	name=$(basename "$3" .json)
	[ "$2" = uniform ] && name=-
	echo "$line" | awk -v r="$1" -v o="$2" -v s="$name" -v ev="$ev" '{
		for (i = 1; i < NF; i++) f[$i] = $(i + 1)
		n = split(ev, e, " "); for (i = 1; i < n; i++) g[e[i]] = e[i + 1]
		printf "| %s | %s | %s | %.2f | %.5f | %s | %s | %s |\n", r, o, s, f["achieved"],
		       f["out_err"], g["kl"], g["top1"], f["off_target"] }'
}

echo "| R | order | score | achieved R | mean output err | KL | top-1 | off target |"
echo "|---|---|---|---|---|---|---|---|"
for r in ${RATIOS:-16 32 64}; do
	row "$r" uniform zd-delta
	for o in importance reversed; do
		for s in $scores; do
			row "$r" "$o" "$s"
		done
	done
done
