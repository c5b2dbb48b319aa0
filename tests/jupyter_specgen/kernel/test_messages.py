"""The comm protocol between the server and the kernel extension."""

import pytest

from jupyter_specgen.kernel.messages import (
    Column, ProtocolError, Spec, SpecsReply, ValidateRequest, Verdict, ValidateReply, decode, to_data)


def test_replies_round_trip_through_the_codec():
    """A reply with nested specs and verdicts decodes to an equal object."""
    spec = Spec(name="df", type="pandas.DataFrame", kind="dataframe", shape=[2, 1], columns=[Column("a", "int64")])
    for msg in (SpecsReply(reply_to="r1", specs=[spec], missing=["x"]),
                ValidateReply(reply_to=3, verdicts=[Verdict(index=0, status="ran", value=spec, assigned=[spec])])):
        assert decode(to_data(msg)) == msg


def test_malformed_requests_say_what_is_wrong():
    """Missing fields, wrong types and wrong versions raise ProtocolError naming the field."""
    with pytest.raises(ProtocolError, match="validate.candidates is required"):
        decode({"type": "validate", "id": 1, "version": 1})
    with pytest.raises(ProtocolError, match="must be a list"):
        decode(to_data(ValidateRequest(id=1, candidates=[])) | {"candidates": "x"})
    with pytest.raises(ProtocolError) as info:
        decode({"type": "specs", "id": 7, "version": 99})
    assert (info.value.error_type, info.value.reply_to) == ("version", 7)
