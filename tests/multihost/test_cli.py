"""The --multihost flags of experiments/cli.py: what they pass to jax.distributed.initialize, and the one-line errors
for a set that cannot work (raised before anything connects)."""
import pytest

from experiments import cli


def test_explicit_flags_become_initialize_arguments():
  options = cli.distributed_options(True, "127.0.0.1:1234", 2, 1, connect_timeout=30, heartbeat_timeout=10)
  assert options == {"coordinator_address": "127.0.0.1:1234", "num_processes": 2, "process_id": 1,
                     "initialization_timeout": 30, "heartbeat_timeout_seconds": 10}


def test_multihost_alone_leaves_the_cluster_to_jax():
  options = cli.distributed_options(True)
  assert options["coordinator_address"] is options["num_processes"] is options["process_id"] is None


def test_no_multihost_no_initialize():
  assert cli.distributed_options(False) is None


@pytest.mark.parametrize("args, message", [
    ((False, "127.0.0.1:1234", 2, 0), "add --multihost"),
    ((True, "127.0.0.1:1234", None, 0), r"also needs \['--num_processes'\]"),
    ((True, None, 2, 0), r"also needs \['--coordinator_address'\]"),
    ((True, "127.0.0.1", 2, 0), "must be HOST:PORT"),
    ((True, "127.0.0.1:1234", 2, 2), r"must be in 0 \.\. --num_processes-1 = 1"),
    ((True, "127.0.0.1:1234", 2, -1), "must be in 0"),
])
def test_inconsistent_flags_name_the_fix(args, message):
  with pytest.raises(ValueError, match=message):
    cli.distributed_options(*args)


def test_timeouts_must_be_positive():
  with pytest.raises(ValueError, match="--heartbeat_timeout=0 must be a positive"):
    cli.distributed_options(True, heartbeat_timeout=0)
