"""The deployment files (deploy/, Dockerfile) against what docdesk reads.

No container engine runs here, so these tests check what someone editing the
files would break: a variable docdesk does not know, an example that leaves
the service open, host names or addresses that no longer agree between the
compose file, the env file and nginx, a balancer that cuts off a large save.
The compose file is read with PyYAML when it is installed (it is not one of
docdesk's dependencies: without it those tests skip and say so), nginx's
config is checked by ``nginx -t`` where nginx is installed, and the compose
file by ``docker compose config`` where a compose client is.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import click
import pytest
from click.testing import CliRunner

from docdesk.cli import main
from docdesk.errors import ConfigurationError
from docdesk.settings import Settings
from docdesk.storage import open_store

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / "docdesk.env.example"
NGINX_CONF = DEPLOY / "nginx.conf"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"

INSTANCES = ("docdesk-1", "docdesk-2")
DOCDESK_SERVICES = (*INSTANCES, "migrate")
# The name of the token the containers' health check sends.
HEALTH_TOKEN = "health"
# How long the Document Server waits for a callback's answer
# (services.CoAuthoring.server.callbackRequestTimeout): docdesk answers a save
# only once it is stored, so the balancer must wait at least as long.
DS_CALLBACK_TIMEOUT_SECONDS = 600

VARIABLE = re.compile(r"\bDOCDESK_[A-Z0-9_]+\b")
ENV_LINE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*)$")
COMMENTED_ENV_LINE = re.compile(r"^#\s*(?P<name>[A-Z_][A-Z0-9_]*)=")
INTERPOLATION = re.compile(
    r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:\?|:-|\?|-)(?P<arg>[^}]*))?\}"
)


# Reading the files


def read_env_file(path: Path) -> dict[str, str]:
    """The ``NAME=value`` lines of a compose env file, comments left out."""
    values = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = ENV_LINE.match(line.strip())
        if match:
            values[match["name"]] = match["value"].strip()
    return values


def commented_names(path: Path) -> set[str]:
    """The variables of ``# NAME=...`` lines: options a user may uncomment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return {m["name"] for line in lines if (m := COMMENTED_ENV_LINE.match(line))}


def filled_env_example() -> dict[str, str]:
    """The example with its empty secrets filled as its comments say."""
    env = read_env_file(ENV_EXAMPLE)
    tokens = [new_token(HEALTH_TOKEN), new_token("app")]
    env.update(
        DOCDESK_JWT_SECRET=secrets.token_hex(32),
        DOCDESK_API_TOKENS=",".join(tokens),
        DOCDESK_SESSION_SECRET=secrets.token_hex(32),
        POSTGRES_PASSWORD=secrets.token_hex(32),
        AWS_SECRET_ACCESS_KEY=secrets.token_hex(32),
    )
    return env


def new_token(name: str) -> str:
    """A ``name:token`` line from ``docdesk token new``, as a user makes one."""
    result = CliRunner().invoke(main, ["token", "new", name], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output.strip()


def known_variables() -> set[str]:
    """Every DOCDESK_* variable docdesk reads: Settings' own, then the CLI's."""

    asked: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: Any = None) -> Any:
            asked.add(key)
            return super().get(key, default)

    Settings.from_env(Recording(DOCDESK_JWT_SECRET=secrets.token_hex(32)))
    return asked | set(_cli_variables(main))


def _cli_variables(command: click.Command) -> Iterator[str]:
    for param in command.params:
        if isinstance(param.envvar, str):
            yield param.envvar
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            yield from _cli_variables(sub)


def load_compose(env: dict[str, str]) -> dict[str, Any]:
    """The compose file as compose reads it with ``--env-file`` of ``env``."""
    yaml = pytest.importorskip(
        "yaml", reason="PyYAML is not installed, so compose.yaml is not parsed"
    )
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    return interpolate(document, env)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Compose's ``${NAME}``, ``${NAME:?message}`` and ``${NAME:-default}``."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(item, env) for item in node]
    if not isinstance(node, str):
        return node

    def one(match: re.Match[str]) -> str:
        value = env.get(match["name"], "")
        if match["op"] in (":?", "?") and not value:
            raise LookupError(match["arg"])
        if match["op"] in (":-", "-") and not value:
            return match["arg"]
        return value

    return INTERPOLATION.sub(one, node)


def container_environment(
    compose: dict[str, Any], service: str, env_file: dict[str, str]
) -> dict[str, str]:
    """A service's environment: its env_file, then its own ``environment``."""
    definition = compose["services"][service]
    assert definition["env_file"] == "docdesk.env"
    environment = definition.get("environment", {})
    assert isinstance(environment, dict), "write environment as a mapping"
    return {**env_file, **{key: str(value) for key, value in environment.items()}}


def address_of(compose: dict[str, Any], service: str) -> ipaddress.IPv4Address:
    networks = compose["services"][service]["networks"]
    return ipaddress.IPv4Address(networks["docdesk"]["ipv4_address"])


# nginx's configuration, as nested directives


Directive = tuple[str, list[str], list[Any]]


def parse_nginx(text: str) -> list[Directive]:
    """``name args;`` and ``name args { ... }``, comments and quotes handled."""
    tokens = re.findall(r'"[^"]*"|\'[^\']*\'|[{};]|[^\s{};"\']+', _uncommented(text))
    directives, rest = _block(tokens, 0)
    assert rest == len(tokens), "nginx.conf has an unmatched }"
    return directives


def _uncommented(text: str) -> str:
    return "\n".join(re.sub(r"#.*", "", line) for line in text.splitlines())


def _block(tokens: list[str], at: int) -> tuple[list[Directive], int]:
    directives: list[Directive] = []
    words: list[str] = []
    while at < len(tokens) and tokens[at] != "}":
        token = tokens[at]
        at += 1
        if token == ";":
            directives.append((words[0], [w.strip("\"'") for w in words[1:]], []))
            words = []
        elif token == "{":
            children, at = _block(tokens, at)
            assert at < len(tokens), "nginx.conf has an unclosed {"
            directives.append((words[0], words[1:], children))
            words, at = [], at + 1
        else:
            words.append(token)
    assert not words, f"nginx.conf: {' '.join(words)} lacks its ;"
    return directives, at


def children(block: list[Directive], name: str) -> list[Directive]:
    return [directive for directive in block if directive[0] == name]


def value(block: list[Directive], name: str) -> list[str]:
    found = children(block, name)
    assert len(found) == 1, f"expected one {name}, found {len(found)}"
    return found[0][1]


def nginx_http() -> list[Directive]:
    (http,) = children(parse_nginx(NGINX_CONF.read_text(encoding="utf-8")), "http")
    return http[2]


def nginx_server(host: str) -> list[Directive]:
    servers = [s[2] for s in children(nginx_http(), "server")]
    named = [
        server
        for server in servers
        if any(host in d[1] for d in children(server, "server_name"))
    ]
    assert len(named) == 1, f"nginx.conf should have one server named {host}"
    return named[0]


def nginx_upstream(name: str) -> list[str]:
    upstreams = [u for u in children(nginx_http(), "upstream") if u[1] == [name]]
    assert len(upstreams) == 1, f"nginx.conf should have one upstream {name}"
    return [server[1][0] for server in children(upstreams[0][2], "server")]


def nginx_size(text: str) -> int:
    units = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    match = re.fullmatch(r"(\d+)([kmg]?)", text.lower())
    assert match, f"not a size nginx reads: {text}"
    return int(match[1]) * units[match[2]]


def nginx_seconds(text: str) -> int:
    units = {"": 1, "s": 1, "m": 60, "h": 3600}
    match = re.fullmatch(r"(\d+)([smh]?)", text)
    assert match, f"not a time nginx reads: {text}"
    return int(match[1]) * units[match[2]]


def host_of(url: str) -> str:
    host = urlsplit(url).hostname
    assert host, f"{url} has no host"
    return host


# The variables


class TestVariables:
    def test_every_docdesk_variable_set_for_the_deployment_is_one_docdesk_reads(
        self,
    ) -> None:
        compose = set(VARIABLE.findall(COMPOSE.read_text(encoding="utf-8")))
        example = {n for n in read_env_file(ENV_EXAMPLE) if n.startswith("DOCDESK_")}
        optional = {n for n in commented_names(ENV_EXAMPLE) if n.startswith("DOCDESK_")}

        unknown = (compose | example | optional) - known_variables()

        assert compose
        assert example
        assert not unknown, f"docdesk reads no such variable: {sorted(unknown)}"

    def test_the_known_variables_are_read_through_settings_and_the_cli(self) -> None:
        known = known_variables()

        assert {
            "DOCDESK_PUBLIC_URL",
            "DOCDESK_API_TOKENS",
            "DOCDESK_LOG_FORMAT",
        } <= known
        assert "DOCDESK_NO_SUCH_THING" not in known

    def test_every_deployment_variable_is_in_the_readme_section(self) -> None:
        readme = README.read_text(encoding="utf-8")
        section = readme.split("## Deployment: several instances", 1)
        names = set(VARIABLE.findall(COMPOSE.read_text(encoding="utf-8")))
        names |= set(read_env_file(ENV_EXAMPLE)) | commented_names(ENV_EXAMPLE)

        assert len(section) == 2, "README.md lacks its deployment section"
        text = section[1].split("\n## ", 1)[0]
        missing = {name for name in names if f"`{name}`" not in text}
        assert not missing, f"README's deployment section omits {sorted(missing)}"


class TestEnvExample:
    def test_unfilled_example_stops_docdesk_instead_of_running_with_no_secret(
        self,
    ) -> None:
        env = read_env_file(ENV_EXAMPLE)

        with pytest.raises(ConfigurationError, match="DOCDESK_JWT_SECRET"):
            Settings.from_env(env, host="0.0.0.0")
        assert env["DOCDESK_API_TOKENS"] == ""
        assert env["POSTGRES_PASSWORD"] == env["AWS_SECRET_ACCESS_KEY"] == ""

    def test_filled_example_serves_a_public_host_with_access_control(self) -> None:
        env = filled_env_example()

        settings = Settings.from_env(env, host="0.0.0.0")

        # `docdesk serve --host 0.0.0.0` refuses to start without this.
        assert settings.access_controlled
        assert HEALTH_TOKEN in {token.name for token in settings.api_tokens}
        assert settings.public_url.startswith("https://")
        assert settings.document_server_url is not None
        assert settings.document_server_url.startswith("https://")
        assert settings.jwt_header == "Authorization"

    def test_host_names_agree_with_the_urls(self) -> None:
        env = read_env_file(ENV_EXAMPLE)

        assert host_of(env["DOCDESK_PUBLIC_URL"]) == env["PUBLIC_HOST"]
        assert host_of(env["DOCDESK_DOCUMENT_SERVER_URL"]) == env["OFFICE_HOST"]
        assert env["PUBLIC_HOST"] != env["OFFICE_HOST"]


# The compose file


class TestCompose:
    def test_compose_file_has_every_piece(self) -> None:
        compose = load_compose(filled_env_example())

        assert set(compose["services"]) == {
            "balancer",
            *DOCDESK_SERVICES,
            "documentserver",
            "postgres",
            "seaweedfs",
        }
        assert list(compose["services"]["balancer"]["ports"]) == ["80:80", "443:443"]
        published = [s for s, d in compose["services"].items() if "ports" in d]
        assert published == ["balancer"]

    def test_unfilled_secrets_stop_compose_with_a_message(self) -> None:
        with pytest.raises(LookupError, match="openssl rand -hex 32"):
            load_compose(read_env_file(ENV_EXAMPLE))

    def test_migrations_run_once_before_the_instances(self) -> None:
        compose = load_compose(filled_env_example())
        services = compose["services"]

        assert services["migrate"]["command"] == ["docdesk", "migrate"]
        assert services["migrate"]["restart"] == "no"
        for instance in INSTANCES:
            after = services[instance]["depends_on"]["migrate"]["condition"]
            assert after == "service_completed_successfully"
            assert "command" not in services[instance]

    def test_instances_build_settings_for_a_public_host(self) -> None:
        env = filled_env_example()
        compose = load_compose(env)

        for service in DOCDESK_SERVICES:
            settings = Settings.from_env(
                container_environment(compose, service, env), host="0.0.0.0"
            )

            assert settings.access_controlled
            assert settings.database_url is not None
            assert settings.database_url.startswith("postgresql+psycopg://")
            assert settings.storage_url is not None
            assert settings.storage_url.startswith("s3://")

    @pytest.mark.anyio
    async def test_storage_url_opens_docdesks_s3_store(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        pytest.importorskip("obstore", reason="the s3 extra is not installed")
        env = filled_env_example()
        environment = container_environment(load_compose(env), "docdesk-1", env)
        for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
            monkeypatch.setenv(name, environment[name])
        settings = Settings.from_env(environment)
        assert settings.storage_url is not None

        store = open_store(settings.storage_url)

        await store.close()

    def test_proxies_and_callback_allow_list_name_the_balancer_and_the_ds(
        self,
    ) -> None:
        env = filled_env_example()
        compose = load_compose(env)
        settings = Settings.from_env(container_environment(compose, "docdesk-1", env))
        balancer = address_of(compose, "balancer")
        ds = address_of(compose, "documentserver")
        (subnet,) = compose["networks"]["docdesk"]["ipam"]["config"]

        assert any(balancer in network for network in settings.trusted_proxies)
        assert any(ds in network for network in settings.callback_allow)
        assert not any(ds in network for network in settings.trusted_proxies)
        assert not any(balancer in network for network in settings.callback_allow)
        for service in ("balancer", "documentserver", *INSTANCES):
            assert address_of(compose, service) in ipaddress.ip_network(
                subnet["subnet"]
            )

    def test_addresses_in_the_settings_are_compose_services(self) -> None:
        env = filled_env_example()
        compose = load_compose(env)
        settings = Settings.from_env(container_environment(compose, "docdesk-1", env))
        services = set(compose["services"])
        assert settings.database_url is not None
        assert settings.storage_url is not None
        assert settings.document_server_internal_url is not None
        storage = urlsplit(settings.storage_url)
        endpoint = parse_qs(storage.query)["endpoint"][0]
        bucket_flag = f"-bucket={storage.hostname}"

        assert host_of(settings.database_url) in services
        assert host_of(endpoint) in services
        assert host_of(settings.document_server_internal_url) in services
        assert bucket_flag in compose["services"]["seaweedfs"]["command"]

    def test_public_names_lead_to_the_balancer_inside_the_network(self) -> None:
        env = filled_env_example()
        compose = load_compose(env)
        settings = Settings.from_env(container_environment(compose, "docdesk-1", env))
        aliases = compose["services"]["balancer"]["networks"]["docdesk"]["aliases"]
        assert settings.document_server_url is not None

        assert host_of(settings.public_url) in aliases
        assert host_of(settings.document_server_url) in aliases

    def test_document_server_shares_the_jwt_secret_and_header(self) -> None:
        env = filled_env_example()
        compose = load_compose(env)
        settings = Settings.from_env(container_environment(compose, "docdesk-1", env))
        ds = compose["services"]["documentserver"]["environment"]

        assert ds["JWT_ENABLED"] == "true"
        assert ds["JWT_SECRET"] == settings.jwt_secret
        assert ds["JWT_HEADER"] == settings.jwt_header

    def test_seaweedfs_reports_nothing_outside_and_takes_docdesks_keys(self) -> None:
        env = filled_env_example()
        seaweedfs = load_compose(env)["services"]["seaweedfs"]

        assert seaweedfs["image"].startswith("chrislusf/seaweedfs:")
        assert seaweedfs["command"][0] == "mini"
        assert "-master.telemetry=false" in seaweedfs["command"]
        assert seaweedfs["environment"]["AWS_ACCESS_KEY_ID"] == env["AWS_ACCESS_KEY_ID"]
        assert (
            seaweedfs["environment"]["AWS_SECRET_ACCESS_KEY"]
            == env["AWS_SECRET_ACCESS_KEY"]
        )

    def test_health_checks_ask_api_health_with_the_health_token(self) -> None:
        compose = load_compose(filled_env_example())

        for instance in INSTANCES:
            script = " ".join(compose["services"][instance]["healthcheck"]["test"])
            assert "http://127.0.0.1:8000/api/health" in script
            assert f'tokens["{HEALTH_TOKEN}"]' in script

    def test_docker_compose_config_accepts_the_file(self, tmp_path: Path) -> None:
        command = _compose_command()
        for name in ("compose.yaml", "nginx.conf"):
            shutil.copy(DEPLOY / name, tmp_path / name)
        env = tmp_path / "docdesk.env"
        env.write_text(
            "".join(f"{k}={v}\n" for k, v in filled_env_example().items()),
            encoding="utf-8",
        )

        checked = subprocess.run(
            [*command, "-f", "compose.yaml", "--env-file", "docdesk.env", "config"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert checked.returncode == 0, checked.stderr
        assert "docdesk-2" in checked.stdout


def _compose_command() -> list[str]:
    docker = shutil.which("docker")
    if docker is not None:
        plugin = subprocess.run(
            [docker, "compose", "version"], capture_output=True, timeout=30, check=False
        )
        if plugin.returncode == 0:
            return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy is None:
        pytest.skip("no compose client (docker compose or docker-compose) here")
    return [legacy]


# nginx


class TestNginx:
    def test_upstreams_are_the_compose_services(self) -> None:
        compose = load_compose(filled_env_example())
        services = set(compose["services"])
        instances = nginx_upstream("docdesk")
        (ds,) = nginx_upstream("documentserver")

        assert sorted(instances) == [f"{name}:8000" for name in INSTANCES]
        assert ds.split(":")[0] in services

    def test_server_names_are_the_host_names_of_the_env_example(self) -> None:
        env = read_env_file(ENV_EXAMPLE)

        docdesk = nginx_server(host_of(env["DOCDESK_PUBLIC_URL"]))
        office = nginx_server(host_of(env["DOCDESK_DOCUMENT_SERVER_URL"]))

        assert docdesk is not office

    def test_the_largest_upload_docdesk_takes_passes_the_balancer(self) -> None:
        settings = Settings.from_env(filled_env_example(), host="0.0.0.0")
        server = nginx_server(host_of(settings.public_url))

        (limit,) = value(server, "client_max_body_size")

        assert nginx_size(limit) > settings.max_upload_bytes

    def test_the_balancer_waits_for_a_large_save_and_download(self) -> None:
        env = read_env_file(ENV_EXAMPLE)
        server = nginx_server(host_of(env["DOCDESK_PUBLIC_URL"]))

        for name in ("proxy_read_timeout", "proxy_send_timeout"):
            (timeout,) = value(server, name)
            assert nginx_seconds(timeout) >= DS_CALLBACK_TIMEOUT_SECONDS

    def test_docdesk_hears_who_connected_and_the_original_host(self) -> None:
        env = read_env_file(ENV_EXAMPLE)
        server = nginx_server(host_of(env["DOCDESK_PUBLIC_URL"]))
        (location,) = [d[2] for d in children(server, "location") if d[1] == ["/"]]

        headers = {
            d[1][0].lower(): d[1][1] for d in children(location, "proxy_set_header")
        }

        # The guard reads X-Forwarded-For from the right: nginx must append
        # the address it saw, not pass on only what the client wrote.
        assert headers["x-forwarded-for"] in (
            "$proxy_add_x_forwarded_for",
            "$remote_addr",
        )
        assert headers["host"] == "$host"
        assert value(location, "proxy_pass") == ["http://docdesk"]

    def test_access_log_leaves_out_signed_queries(self) -> None:
        http = nginx_http()
        formats = {d[1][0]: " ".join(d[1][1:]) for d in children(http, "log_format")}

        (log,) = [d[1] for d in children(http, "access_log")]

        assert log[1] in formats
        for leak in ("$request ", "$request_uri", "$args", "$query_string"):
            assert leak not in formats[log[1]] + " "

    def test_nginx_accepts_the_config(self, tmp_path: Path) -> None:
        nginx = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")
        if nginx is None:
            pytest.skip("nginx is not installed here (apt-get install nginx)")
        config = _testable_nginx_conf(tmp_path)

        checked = subprocess.run(
            [
                nginx,
                "-t",
                "-q",
                "-p",
                f"{tmp_path}/",
                "-c",
                str(config),
                "-e",
                "stderr",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

        assert checked.returncode == 0, checked.stderr


def _testable_nginx_conf(tmp_path: Path) -> Path:
    """deploy/nginx.conf with what only the compose network has, made local.

    The upstream hosts resolve only inside the compose network, and the
    certificate and the pid file live where the container keeps them.
    """
    trustme = pytest.importorskip("trustme")
    env = read_env_file(ENV_EXAMPLE)
    hosts = (
        host_of(env["DOCDESK_PUBLIC_URL"]),
        host_of(env["DOCDESK_DOCUMENT_SERVER_URL"]),
    )
    certificate = trustme.CA().issue_cert(*hosts)
    certificate.private_key_pem.write_to_path(str(tmp_path / "privkey.pem"))
    certificate.cert_chain_pems[0].write_to_path(str(tmp_path / "fullchain.pem"))

    text = NGINX_CONF.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^(\s*server\s+)[A-Za-z0-9.-]+(:\d+)", r"\g<1>127.0.0.1\2", text)
    text = text.replace("/etc/nginx/tls/", f"{tmp_path}/")
    text = text.replace("/var/run/nginx.pid", f"{tmp_path}/nginx.pid")
    # Temporary files of a run as an ordinary user, not in the system's paths.
    temporary = "".join(
        f"    {kind}_temp_path {tmp_path}/{kind};\n"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    text = text.replace("http {\n", "http {\n" + temporary, 1)
    config = tmp_path / "nginx.conf"
    config.write_text(text, encoding="utf-8")
    return config


# The image


class TestImage:
    def test_build_context_holds_what_the_dockerfile_copies(self) -> None:
        ignore = DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        copies = re.findall(r"(?m)^COPY\s+(?!--)(.+?)\s+\S+$", DOCKERFILE.read_text())
        sources = {source for line in copies for source in line.split()}

        rules = [line.strip() for line in ignore if line.strip()[:1] not in ("", "#")]
        assert rules[0] == "*", "the context lets in only what is listed"
        assert sources == {"pyproject.toml", "README.md", "src"}
        for source in sources:
            assert f"!{source}" in ignore or f"!{source}/" in ignore

    def test_image_installs_the_extras_scale_out_needs(self) -> None:
        dockerfile = DOCKERFILE.read_text(encoding="utf-8")
        project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        extras = {"postgresql", "s3", "metrics"}

        installed = re.findall(r'"docdesk\[([a-z0-9,]+)\]"', dockerfile)

        assert installed
        assert all(set(i.split(",")) == extras for i in installed)
        assert extras <= set(project["project"]["optional-dependencies"])

    def test_image_serves_as_a_user_on_the_port_nginx_balances(self) -> None:
        dockerfile = DOCKERFILE.read_text(encoding="utf-8")

        assert dockerfile.startswith("# syntax=")
        assert re.findall(r"(?m)^FROM (\S+)", dockerfile)[-1] == "python:3.11-slim"
        assert re.search(r"(?m)^USER docdesk$", dockerfile)
        assert re.search(
            r'(?m)^CMD \["docdesk", "serve", "--host", "0.0.0.0", "--port", "8000"\]$',
            dockerfile,
        )
        assert all(server.endswith(":8000") for server in nginx_upstream("docdesk"))
