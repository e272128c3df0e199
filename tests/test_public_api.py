import docdesk


def test_the_package_exports_exactly_its_public_names() -> None:
    exported = set(docdesk.__all__)

    assert exported == {
        "Action",
        "BlobStore",
        "CallbackPayload",
        "CallbackReply",
        "CallbackStatus",
        "Catalog",
        "DocDesk",
        "DocdeskError",
        "DocumentKey",
        "DocumentRecord",
        "DocumentType",
        "EditorConfig",
        "EditorMode",
        "Fetcher",
        "ForceSaveType",
        "Format",
        "Links",
        "Permissions",
        "Settings",
        "SignedCallback",
        "User",
        "UserAction",
        "VersionRecord",
        "VersionSource",
        "format_for",
        "new_document_key",
        "open_store",
        "read_callback",
    }
    assert all(hasattr(docdesk, name) for name in exported)


def test_the_core_imports_no_web_framework() -> None:
    import subprocess
    import sys

    code = "import sys, docdesk; print('starlette' in sys.modules)"

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )

    assert out.stdout.strip() == "False"
