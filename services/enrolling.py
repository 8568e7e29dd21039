"""How an edge or a hospital enrols: ask the cloud for a challenge, sign it with the key being enrolled, post
the enrolment (with the single-use enrolment token issued for its id on a first enrolment; a re-enrolment
after a lost API token needs none). One copy for the edge's cloud link, the hospital's agent and the tests.
"""

from __future__ import annotations

from protocol.messages import ClientEnrolment, EdgeEnrolment, Enrolled, EnrolmentChallenge, Signer
from services.http import Peer


async def enrol(
    peer: Peer,
    federation_id: str,
    enrolment: EdgeEnrolment | ClientEnrolment,
    key: Signer,
    *,
    enrolment_token: str | None,
) -> Enrolled:
    """`enrolment` signed over a fresh challenge with `key` (the private half of its `public_key`), posted to
    the cloud behind `peer`; the cloud's answer. Refusals raise `services.http.PeerRefusedError`."""
    fid = federation_id
    answer = await peer.request("POST", f"/federations/{fid}/enrolment-challenges")
    challenge = EnrolmentChallenge.model_validate_json(answer.content)
    signed = enrolment.signed(key, federation_id=fid, nonce=challenge.nonce)
    where = "edges" if isinstance(enrolment, EdgeEnrolment) else "clients"
    headers = {"Content-Type": "application/json"}
    if enrolment_token is not None:
        headers["Authorization"] = f"Bearer {enrolment_token}"
    response = await peer.request(
        "POST", f"/federations/{fid}/{where}", content=signed.model_dump_json().encode(), headers=headers
    )
    return Enrolled.model_validate_json(response.content)
