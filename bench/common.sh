# Sourced by the side-by-side benchmark scripts (cnn.sh, alexnet.sh, head.sh): the release build,
# whether torch is there, a work directory removed at exit, and the helpers that read bench tables.
swift build -c release 2>&1 | tail -1
bin=$PWD/.build/release/orthohash
have_torch=0
python3 -c "import torch" 2>/dev/null && have_torch=1
[ $have_torch = 1 ] || echo "torch is not installed: orthohash alone"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The median of the numbers on standard input.
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# a / b.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { print a / b }'; }
# A side-by-side table row: label, then the files of orthohash's, PyTorch NCHW's and channels_last's
# rates (one per round), printed as medians and ratios (or orthohash's alone without torch).
side_by_side() {
  local label=$1 o p c
  o=$(median < "$2")
  if [ $have_torch = 1 ]; then
    p=$(median < "$3"); c=$(median < "$4")
    printf "%-22s %14.2f %16.2f %16.2f %11.2fx %11.2fx\n" "$label" "$o" "$p" "$c" "$(ratio "$o" "$p")" "$(ratio "$o" "$c")"
  else
    printf "%-22s %14.2f\n" "$label" "$o"
  fi
}
side_by_side_header() { printf "%-22s %14s %16s %16s %12s %12s\n" config "orthohash im/s" "PyTorch NCHW" "channels_last" "vs NCHW" "vs ch_last"; }
