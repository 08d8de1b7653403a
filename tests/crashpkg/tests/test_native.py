import pytest

import crashpkg


def test_total():
    assert crashpkg.total([1, 2, 3]) == 6


def test_total_rejects_a_tuple():
    with pytest.raises(TypeError):
        crashpkg.total((1, 2))


def test_leaky_pair():
    assert crashpkg.leaky_pair("x" * 100) == ("x" * 100,) * 2


def test_pair():
    assert crashpkg.pair("x" * 100) == ("x" * 100,) * 2


def test_read_after_free():
    # Kills an ASan interpreter: the block is read after free().
    assert crashpkg.read_after_free(7) == 7


def test_zz_runs_after_the_crash():
    assert crashpkg.total([]) == 0
