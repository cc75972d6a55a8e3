"""Fine-tuning stays on the SD family: another family's base is refused by name before anything loads."""

import pytest

from restyle.errors import InvalidParameterError


@pytest.mark.parametrize("family", ["sdxl", "flux-fill"])
def test_a_base_of_another_family_is_refused(family_folder, family):
    from restyle.train.parts import load_parts

    with pytest.raises(InvalidParameterError, match=f"is a {family} model; restyle fine-tunes the SD family"):
        load_parts(str(family_folder(family)), "cpu")
