#!/bin/sh
# Open MPI's remote launcher for the test hosts (--mca plm_rsh_agent): takes the place of ssh.
# Drops ssh-style options, maps host hN to namespace pnhN, and runs the command there with the
# host's name, so Open MPI sees N distinct hosts.
while [ $# -gt 0 ]; do
  case "$1" in
    -*) shift ;;
    *) break ;;
  esac
done
host=$1
shift
exec ip netns exec "${NETNS_PREFIX:-pn}$host" unshare --uts sh -c "hostname $host; $*"
