"""Where the reachability probe runs: not where a classic session's executors share this
machine (the probe itself, failing and passing, is tested under Spark Connect)."""

from sparkdownpour.reachability import check_reachable, executors_on_this_machine


def test_a_classic_local_session_needs_no_probe(spark):
    assert executors_on_this_machine(spark)
    # Nothing listens at this URL: a probe would fail, so None proves none ran.
    assert check_reachable(spark, ["http://127.0.0.1:9"], "token", tasks=2, timeout=1,
                           host="127.0.0.1") is None


class _Session:  # what executors_on_this_machine reads of a session: its master
    def __init__(self, master):
        self.master = master


def test_a_remote_master_is_probed():
    assert not executors_on_this_machine(_Session("yarn"))
    assert not executors_on_this_machine(_Session("spark://10.0.0.5:7077"))
    assert executors_on_this_machine(_Session("local-cluster[2,1,1024]"))
