import pytest

from reuse.config import PROFILES, check_choices, get_profile


def test_profiles_and_seed_override():
    assert set(PROFILES) == {"smoke", "quick", "paper"}
    assert get_profile("quick", [4, 5]).seeds == (4, 5)
    assert len(get_profile("paper").seeds) >= 5 and len(get_profile("quick").seeds) >= 3
    with pytest.raises(ValueError, match="profile='huge'"):
        get_profile("huge")
    with pytest.raises(ValueError, match="seeds="):
        get_profile("quick", [-1])


def test_check_choices():
    assert check_choices("tasks", "autoencoder", ["autoencoder"]) == ["autoencoder"]
    with pytest.raises(ValueError, match="tasks=\\['x'\\]; allowed: a, b"):
        check_choices("tasks", ["x"], ["a", "b"])
