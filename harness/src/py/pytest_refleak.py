# pytest plugin of capisan's `test-pkg -R WARMUPS:RUNS` (loaded as `-p capisan_refleak`, after
# regrtest_cleanup.py in the same module): each test that passed is called again WARMUPS + RUNS
# times in the same process with the same fixture values, with regrtest's cleanup (cache
# clearing and collections) after every call, and the change of sys.gettotalrefcount() and
# sys.getallocatedblocks() over each call is written to $CAPISAN_REFLEAK_OUT, one JSON line per
# test. capisan applies regrtest's rule (capisan::leak_rule) to the measured runs: what pytest-leaks
# did, with the caches regrtest clears.
import json as _capisan_json
import os as _capisan_os

import pytest as _capisan_pytest

_CAPISAN_OUT = _capisan_os.environ.get("CAPISAN_REFLEAK_OUT", "")
_CAPISAN_WARMUPS, _CAPISAN_RUNS = (
    int(x) for x in _capisan_os.environ.get("CAPISAN_REFLEAK", "3:3").split(":")
)


def _capisan_counters():
    refs = getattr(_regrtest_sys, "gettotalrefcount", lambda: 0)()
    return refs, _regrtest_sys.getallocatedblocks()


@_capisan_pytest.hookimpl(hookwrapper=True)
def pytest_pyfunc_call(pyfuncitem):
    outcome = yield
    if outcome.excinfo is not None or not _CAPISAN_OUT:
        return
    func = pyfuncitem.obj
    kwargs = {a: pyfuncitem.funcargs[a] for a in pyfuncitem._fixtureinfo.argnames}
    refs, blocks = [], []
    regrtest_cleanup()
    for i in range(_CAPISAN_WARMUPS + _CAPISAN_RUNS):
        r0, b0 = _capisan_counters()
        try:
            func(**kwargs)
        except BaseException:
            # A test that fails when repeated is not judged.
            return
        regrtest_cleanup()
        r1, b1 = _capisan_counters()
        if i >= _CAPISAN_WARMUPS:
            refs.append(r1 - r0)
            blocks.append(b1 - b0)
    line = {"nodeid": pyfuncitem.nodeid, "references": refs, "memory-blocks": blocks}
    with open(_CAPISAN_OUT, "a") as f:
        f.write(_capisan_json.dumps(line) + "\n")
