from __future__ import annotations

import dataclasses
import re

import jwt
import pytest

from docdesk import tokens
from docdesk.editor import (
    DocumentKey,
    EditorConfig,
    EditorMode,
    Permissions,
    User,
    is_document_key,
    new_document_key,
)
from docdesk.errors import TokenError
from docdesk.formats import format_for

SECRET = "a-test-secret-of-at-least-32-bytes!"
# The Document Server's DOC_ID_PATTERN with the documented length limit.
DS_KEY = re.compile(r"[0-9a-zA-Z._=-]{1,128}")
ALL_PERMISSIONS = {
    "edit",
    "download",
    "print",
    "review",
    "comment",
    "fillForms",
    "modifyFilter",
    "modifyContentControl",
    "copy",
    "chat",
    "protect",
}


def _config(
    extension: str = "docx", mode: EditorMode = EditorMode.EDIT
) -> EditorConfig:
    fmt = format_for(extension)
    return EditorConfig(
        format=fmt,
        key=DocumentKey("Khirz6zTPdfd7"),
        title=f"Example.{extension}",
        url="http://127.0.0.1:8000/ds/documents/42/file?key=Khirz6zTPdfd7&sig=ab",
        callback_url="http://127.0.0.1:8000/ds/documents/42/callback?sig=cd",
        user=User(id="78e1e841", name="John Smith"),
        mode=mode,
        permissions=Permissions.for_mode(mode, fmt),
    )


class TestDocumentKey:
    def test_new_keys_are_in_the_document_servers_alphabet(self) -> None:
        keys = [new_document_key() for _ in range(10_000)]

        assert all(DS_KEY.fullmatch(key) for key in keys)

    def test_new_keys_do_not_repeat(self) -> None:
        keys = {new_document_key() for _ in range(10_000)}

        assert len(keys) == 10_000

    @pytest.mark.parametrize(
        "value", ["Khirz6zTPdfd7", "a", "A-b_c.d=e", "0" * 128, new_document_key()]
    )
    def test_valid_keys_are_recognised(self, value: str) -> None:
        assert is_document_key(value)

    @pytest.mark.parametrize(
        "value",
        [
            "",
            "0" * 129,
            "has space",
            "slash/key",
            "plus+key",
            "key\n",
            "\nkey",
            "k\u00e9y",
            "key;drop",
            "a%20b",
        ],
    )
    def test_invalid_keys_are_refused(self, value: str) -> None:
        assert not is_document_key(value)


class TestUser:
    def test_limits_are_inclusive_at_128_characters(self) -> None:
        user = User(id="u" * 128, name="n" * 128)

        assert len(user.id) == len(user.name) == 128

    @pytest.mark.parametrize(
        ("user_id", "name"), [("", "John"), ("u" * 129, "John"), ("u", "n" * 129)]
    )
    def test_out_of_limit_user_is_refused(self, user_id: str, name: str) -> None:
        with pytest.raises(ValueError, match="user"):
            User(id=user_id, name=name)


class TestPermissions:
    def test_defaults_name_every_permission_the_config_sends(self) -> None:
        fields = {f.name for f in dataclasses.fields(Permissions)}

        assert fields == ALL_PERMISSIONS

    def test_view_mode_cannot_edit(self) -> None:
        permissions = Permissions.for_mode(EditorMode.VIEW, format_for("docx"))

        assert (permissions.edit, permissions.review, permissions.fillForms) == (
            False,
            False,
            False,
        )
        assert (permissions.download, permissions.comment) == (True, True)

    @pytest.mark.parametrize("extension", ["docx", "xlsx", "pptx", "odt"])
    def test_edit_mode_edits_editable_and_lossy_formats(self, extension: str) -> None:
        permissions = Permissions.for_mode(EditorMode.EDIT, format_for(extension))

        assert (permissions.edit, permissions.review, permissions.fillForms) == (
            True,
            True,
            True,
        )

    @pytest.mark.parametrize("extension", ["doc", "vsdx"])
    def test_edit_mode_on_a_view_only_format_cannot_edit(self, extension: str) -> None:
        permissions = Permissions.for_mode(EditorMode.EDIT, format_for(extension))

        assert not permissions.edit


class TestConfig:
    def test_config_has_the_shape_the_ds_reads(self) -> None:
        config = _config().to_dict()

        assert config["documentType"] == "word"
        assert config["document"]["fileType"] == "docx"
        assert config["document"]["key"] == "Khirz6zTPdfd7"
        assert config["document"]["title"] == "Example.docx"
        assert config["document"]["url"].startswith("http://127.0.0.1:8000/")
        assert set(config["document"]["permissions"]) == ALL_PERMISSIONS
        assert config["editorConfig"]["callbackUrl"].endswith("/callback?sig=cd")
        assert config["editorConfig"]["mode"] == "edit"
        assert config["editorConfig"]["lang"] == "en"
        assert config["editorConfig"]["user"] == {
            "id": "78e1e841",
            "name": "John Smith",
        }
        assert config["editorConfig"]["customization"] == {"forcesave": True}

    @pytest.mark.parametrize(
        ("extension", "document_type"),
        [
            ("docx", "word"),
            ("odt", "word"),
            ("xlsx", "cell"),
            ("csv", "cell"),
            ("pptx", "slide"),
            ("pdf", "pdf"),
            ("vsdx", "diagram"),
        ],
    )
    def test_document_type_follows_the_format(
        self, extension: str, document_type: str
    ) -> None:
        config = _config(extension).to_dict()

        assert config["documentType"] == document_type
        assert config["document"]["fileType"] == extension

    def test_view_mode_config_says_view_and_cannot_edit(self) -> None:
        config = _config(mode=EditorMode.VIEW).signed(SECRET)

        assert config["editorConfig"]["mode"] == "view"
        assert config["document"]["permissions"]["edit"] is False
        claims = tokens.verify(config["token"], SECRET)
        assert claims["document"]["permissions"]["edit"] is False


class TestSignedConfig:
    def test_token_claims_are_the_config_without_the_token(self) -> None:
        config = _config().signed(SECRET)

        claims = tokens.verify(config.pop("token"), SECRET)

        assert claims == config

    def test_token_is_unwrapped_without_the_claims_the_ds_refuses(self) -> None:
        config = _config().signed(SECRET)

        claims = tokens.verify(config["token"], SECRET)

        assert not {"url", "key", "payload"} & set(claims)
        assert claims["document"]["key"] == "Khirz6zTPdfd7"

    def test_token_permissions_deep_equal_the_configs(self) -> None:
        config = _config("xlsx", EditorMode.VIEW).signed(SECRET)

        claims = tokens.verify(config["token"], SECRET)

        assert claims["document"]["permissions"] == config["document"]["permissions"]

    def test_token_holds_the_claims_required_since_7_1(self) -> None:
        config = _config().signed(SECRET)

        claims = tokens.verify(config["token"], SECRET)

        assert claims["document"]["url"] == config["document"]["url"]
        assert (
            claims["editorConfig"]["callbackUrl"]
            == (config["editorConfig"]["callbackUrl"])
        )
        assert claims["editorConfig"]["mode"] == "edit"

    def test_token_is_hs256_and_fails_with_another_secret(self) -> None:
        token = _config().signed(SECRET)["token"]

        assert jwt.get_unverified_header(token)["alg"] == "HS256"
        with pytest.raises(TokenError):
            tokens.verify(token, "another-secret-of-at-least-32-bytes")

    def test_signing_does_not_change_the_config(self) -> None:
        editor_config = _config()
        before = editor_config.to_dict()

        editor_config.signed(SECRET)

        assert editor_config.to_dict() == before


class TestDefaultPermissions:
    def test_a_view_mode_config_without_permissions_does_not_allow_editing(
        self,
    ) -> None:
        config = dataclasses.replace(_config(mode=EditorMode.VIEW), permissions=None)

        permissions = config.to_dict()["document"]["permissions"]

        assert permissions["edit"] is False
        assert permissions["review"] is False
