"""The signed editor config, as the browser fetches it over HTTP."""

from __future__ import annotations

import jwt
import pytest

from .conftest import SECRET
from .harness import Service
from .office import make_docx, make_xlsx
from .simulated import Simulated


def test_the_config_has_every_field_the_editor_needs(service: Service) -> None:
    document = service.upload("Minutes.docx", make_docx("minutes"))

    config = service.config(document["id"], user_id="u-17", user_name="Ann Lee")

    assert config["documentType"] == "word"
    assert config["document"]["fileType"] == "docx"
    assert config["document"]["title"] == "Minutes.docx"
    assert isinstance(config["document"]["key"], str)
    assert config["document"]["key"]
    assert config["document"]["permissions"]["edit"] is True
    assert config["editorConfig"]["mode"] == "edit"
    assert config["editorConfig"]["lang"] == "en"
    assert config["editorConfig"]["user"] == {"id": "u-17", "name": "Ann Lee"}
    assert config["editorConfig"]["customization"]["forcesave"] is True


def test_the_token_is_the_config_itself_signed_unwrapped(service: Service) -> None:
    document = service.upload("Signed.docx", make_docx("signed"))
    config = service.config(document["id"], user_id="u1", user_name="U One")

    claims = jwt.decode(config["token"], SECRET, algorithms=["HS256"])

    assert "payload" not in claims
    unsigned = {name: value for name, value in config.items() if name != "token"}
    assert {name: claims[name] for name in unsigned} == unsigned


def test_the_token_does_not_verify_with_another_secret(service: Service) -> None:
    document = service.upload("Other.docx", make_docx("other"))
    config = service.config(document["id"])

    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(config["token"], "another-secret-" + "y" * 32, algorithms=["HS256"])


def test_the_links_are_absolute_under_the_public_url(service: Service) -> None:
    document = service.upload("Links.docx", make_docx("links"))

    config = service.config(document["id"])

    assert config["document"]["url"].startswith(service.url + "/")
    assert config["editorConfig"]["callbackUrl"].startswith(service.url + "/")
    assert document["id"] in config["document"]["url"]
    assert document["id"] in config["editorConfig"]["callbackUrl"]


def test_two_users_share_the_key_while_the_session_is_open(sim: Simulated) -> None:
    document_id = sim.service.upload("Shared.docx", make_docx("shared"))["id"]
    ann = sim.open(document_id, "ann")

    bob = sim.open(document_id, "bob")

    assert bob.key == ann.key
    assert bob.config["document"]["url"] == ann.config["document"]["url"]
    assert sim.control.state(bob.id)["editors"] == ["ann", "bob"]


def test_the_view_mode_config_does_not_let_anyone_edit(service: Service) -> None:
    document = service.upload("Read only.docx", make_docx("look, don't touch"))

    config = service.config(document["id"], mode="view")

    assert config["editorConfig"]["mode"] == "view"
    assert config["document"]["permissions"]["edit"] is False
    assert config["document"]["permissions"]["review"] is False
    claims = jwt.decode(config["token"], SECRET, algorithms=["HS256"])
    assert claims["document"]["permissions"] == config["document"]["permissions"]


def test_a_spreadsheet_opens_in_the_cell_editor(service: Service) -> None:
    document = service.upload("Numbers.xlsx", make_xlsx("42"))

    config = service.config(document["id"], lang="de")

    assert config["documentType"] == "cell"
    assert config["document"]["fileType"] == "xlsx"
    assert config["editorConfig"]["lang"] == "de"


def test_an_unknown_mode_is_a_json_400(service: Service) -> None:
    document = service.upload("Mode.docx", make_docx("mode"))

    response = service.client.get(
        f"/api/documents/{document['id']}/editor-config", params={"mode": "admin"}
    )

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
