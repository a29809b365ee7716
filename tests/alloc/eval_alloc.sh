#!/bin/sh
# eval_alloc.sh BENCH_ALLOC charlm|1g [BENCH ARGS...] -- the allocation evidence, as a markdown
# table: at each total ratio (RATIOS, default "16 24 32 48 64"), uniform vs the curve allocation
# (codec/alloc.h) weighted by importance (1 - ZD of the fine-tuned weights; on charlm also LIM)
# and by the same scores reversed, at equal bytes (bench_alloc --match-uniform: the budget is what
# uniform stores), every point planned by dq_plan (bench_alloc.c), with the achieved total ratio,
# the size-weighted mean output error of the matrices (as `deltafs info`), and on charlm the
# model's own output: KL divergence and top-1 agreement of the next-character distribution
# against the real fine-tune on QA text (tools/charlm.py eval; LIM from other QA text). Extra
# arguments go to bench_alloc (e.g. --spread 2 --window inf).
#   charlm: ../shared/data/charlm, a few seconds a row.
#   1g:     scratch/dq/{base,ft}.safetensors (tests/deltadq/meson.build says how to make them),
#           a few minutes per ratio on 2 cores (the rows of one ratio share their plans).
# Work files go to scratch/alloc/ (git-ignored); the plans are kept in scratch/alloc/curves-MODEL.bin
# (delete it after a codec change).
set -eu
bench=$1
model=$2
shift 2
root=$(cd "$(dirname "$0")/../.." && pwd)
py=/usr/bin/python3
work=$root/scratch/alloc
mkdir -p "$work"
case $model in
charlm)
	base=$root/../shared/data/charlm/base.safetensors
	ft=$root/../shared/data/charlm/finetuned_qa.safetensors
	$py "$root/tools/charlm.py" lim "$ft" "$root/tests/alloc/qa_calib.txt" -o "$work/lim.json" 2>/dev/null
	scores="zd-ft $work/lim.json" ;;
1g)
	base=$root/scratch/dq/base.safetensors
	ft=$root/scratch/dq/ft.safetensors
	scores="zd-ft" ;;
*)
	echo "usage: eval_alloc.sh BENCH_ALLOC charlm|1g [BENCH ARGS...]" >&2
	exit 2 ;;
esac

curves=$work/curves-$model.bin
row() { # R ORDER SCORE [BENCH ARGS...]
	r=$1 o=$2 sc=$3
	shift 3
	out=$work/recon.safetensors
	if [ "$model" = charlm ]; then
		line=$("$bench" --curves "$curves" --match-uniform "$@" --ratio "$r" --order "$o" \
			--score "$sc" -o "$out" "$base" "$ft")
		ev=$($py "$root/tools/charlm.py" eval "$ft" "$out" "$root/tests/alloc/qa_eval.txt")
	else
		line=$("$bench" --curves "$curves" --match-uniform "$@" --ratio "$r" --order "$o" \
			--score "$sc" "$base" "$ft")
		ev="kl - top1 -"
	fi
	name=$(basename "$sc" .json)
	[ "$o" = uniform ] && name=-
	echo "$line" | awk -v r="$r" -v o="$o" -v s="$name" -v ev="$ev" '{
		for (i = 1; i < NF; i++) f[$i] = $(i + 1)
		n = split(ev, e, " "); for (i = 1; i < n; i++) g[e[i]] = e[i + 1]
		printf "| %s | %s | %s | %.2f | %.5f | %s | %s | %s |\n", r, o, s, f["achieved"],
		       f["out_err"], g["kl"], g["top1"], f["off_target"] }'
}

echo "| R | order | score | achieved R | mean output err | KL | top-1 | off target |"
echo "|---|---|---|---|---|---|---|---|"
for r in ${RATIOS:-16 24 32 48 64}; do
	row "$r" uniform zd-ft "$@"
	for o in importance reversed; do
		for s in $scores; do
			row "$r" "$o" "$s" "$@"
		done
	done
done
