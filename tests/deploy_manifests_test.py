#!/usr/bin/python3
"""Parses the Kubernetes manifests in deploy/k8s and cross-checks them against each other, the
Dockerfile, make-secrets.sh and the quantd binary's flags.

  /usr/bin/python3 tests/deploy_manifests_test.py --source-dir . --quantd build/server/quantd

Run by ctest as DeployManifestsTest. Needs python3-yaml and openssl (deploy/install-deps.sh);
`kubectl kustomize` is also run when kubectl is on PATH, and skipped otherwise.
"""
import argparse
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import yaml

# Files make-secrets.sh writes that must never reach a Secret.
NOT_FOR_THE_CLUSTER = frozenset({"ca.key"})

SOURCE_DIR = None
QUANTD_BINARY = None


def k8s_dir():
    return os.path.join(SOURCE_DIR, "deploy", "k8s")


def load_yaml_file(path):
    with open(path, encoding="utf-8") as f:
        return [doc for doc in yaml.safe_load_all(f) if doc is not None]


def parse_env_file(path):
    """KEY=VALUE lines as kustomize reads them, plus QUANTD_ settings that are commented out."""
    values, commented = {}, {}
    with open(path, encoding="utf-8") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                m = re.match(r"#\s*(QUANTD_[A-Z0-9_]+)=(\S*)\s*$", line)
                if m:
                    commented[m.group(1)] = m.group(2)
                continue
            key, sep, value = line.partition("=")
            if not sep or not key:
                raise ValueError(f"{path}:{number}: not KEY=VALUE: {line!r}")
            if key in values:
                raise ValueError(f"{path}:{number}: {key} set twice")
            values[key] = value
    return values, commented


def generator_files(generator):
    """key -> path (relative to the kustomization) of a config/secret generator's files."""
    out = {}
    for entry in generator.get("files", []) or []:
        key, sep, path = entry.partition("=")
        if not sep:
            key, path = posixpath.basename(entry), entry
        out[key] = path
    return out


def port_of(address):
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"{address!r} is not host:port")
    return int(port)


def under(path, directory):
    path, directory = posixpath.normpath(path), posixpath.normpath(directory)
    return posixpath.isabs(path) and path.startswith(directory.rstrip("/") + "/")


def quantity_bytes(quantity):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40,
             "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]i|[kMGT])?", str(quantity))
    if not m:
        raise ValueError(f"cannot parse quantity {quantity!r}")
    return float(m.group(1)) * units.get(m.group(2), 1)


def dockerfile():
    """EXPOSE ports, ENV values and the USER line of the repository's Dockerfile."""
    with open(os.path.join(SOURCE_DIR, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        if not line.lstrip().startswith("#"):
            lines.append(line.strip())
    expose, env, user = set(), {}, None
    for line in lines:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "EXPOSE":
            expose |= {int(p.split("/")[0]) for p in rest.split()}
        elif word == "ENV":
            for m in re.finditer(r"(\w+)=(\S+)", rest):
                env[m.group(1)] = m.group(2)
        elif word == "USER":
            user = rest.strip()
    return expose, env, user


def dockerfile_lines(instruction):
    """The arguments of every `instruction` line (continuations joined) of the Dockerfile."""
    with open(os.path.join(SOURCE_DIR, "Dockerfile"), encoding="utf-8") as f:
        text = f.read()
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        word, _, rest = line.strip().partition(" ")
        if word.upper() == instruction:
            found.append(rest.strip())
    return found


class Deploy:
    """The kustomization and everything it refers to, parsed once."""

    def __init__(self):
        path = os.path.join(k8s_dir(), "kustomization.yaml")
        with open(path, encoding="utf-8") as f:
            self.kustomization = yaml.safe_load(f)
        self.resources = list(self.kustomization.get("resources", []) or [])
        self.objects = []
        for resource in self.resources:
            self.objects.extend(load_yaml_file(os.path.join(k8s_dir(), resource)))
        self.config_generators = self.kustomization.get("configMapGenerator", []) or []
        self.secret_generators = self.kustomization.get("secretGenerator", []) or []
        self.env, self.commented_env = {}, {}
        for generator in self.config_generators:
            for env_file in generator.get("envs", []) or []:
                values, commented = parse_env_file(os.path.join(k8s_dir(), env_file))
                self.env.update(values)
                self.commented_env.update(commented)
            for literal in generator.get("literals", []) or []:
                key, _, value = literal.partition("=")
                self.env[key] = value

    def find(self, kind, name=None):
        return [o for o in self.objects
                if o.get("kind") == kind and (name is None or o["metadata"]["name"] == name)]

    def one(self, kind, name):
        found = self.find(kind, name)
        if len(found) != 1:
            raise AssertionError(f"expected one {kind} {name}, found {len(found)}")
        return found[0]

    @property
    def statefulset(self):
        return self.one("StatefulSet", "quantd")

    @property
    def pod_spec(self):
        return self.statefulset["spec"]["template"]["spec"]

    @property
    def container(self):
        containers = self.pod_spec["containers"]
        if len(containers) != 1:
            raise AssertionError(f"expected one container, found {len(containers)}")
        return containers[0]

    @property
    def container_ports(self):
        return {p["name"]: p["containerPort"] for p in self.container.get("ports", [])}

    def mount_of_volume(self, volume_name):
        mounts = [m for m in self.container.get("volumeMounts", []) if m["name"] == volume_name]
        if len(mounts) != 1:
            raise AssertionError(f"volume {volume_name} is mounted {len(mounts)} times")
        return mounts[0]

    def secret_volume(self, secret_name):
        vols = [v for v in self.pod_spec.get("volumes", [])
                if (v.get("secret") or {}).get("secretName") == secret_name]
        if len(vols) != 1:
            raise AssertionError(f"Secret {secret_name} is in {len(vols)} volumes")
        return vols[0]

    def secret_generator(self, name):
        found = [g for g in self.secret_generators if g["name"] == name]
        if len(found) != 1:
            raise AssertionError(f"expected one secretGenerator {name}, found {len(found)}")
        return found[0]

    def produced_names(self, kind):
        generators = self.config_generators if kind == "ConfigMap" else self.secret_generators
        return ({g["name"] for g in generators} |
                {o["metadata"]["name"] for o in self.find(kind)})

    def referenced_names(self, kind):
        """Names of ConfigMaps or Secrets the pod template uses (volumes, envFrom, env)."""
        vol_key, vol_name = ("configMap", "name") if kind == "ConfigMap" else ("secret", "secretName")
        ref_key = "configMapRef" if kind == "ConfigMap" else "secretRef"
        key_ref = "configMapKeyRef" if kind == "ConfigMap" else "secretKeyRef"
        names = set()
        for v in self.pod_spec.get("volumes", []):
            if vol_key in v:
                names.add(v[vol_key][vol_name])
            for source in (v.get("projected") or {}).get("sources", []):
                if vol_key in source:
                    names.add(source[vol_key]["name"])
        for c in self.pod_spec["containers"] + self.pod_spec.get("initContainers", []):
            for e in c.get("envFrom", []):
                if ref_key in e:
                    names.add(e[ref_key]["name"])
            for e in c.get("env", []):
                ref = (e.get("valueFrom") or {}).get(key_ref)
                if ref:
                    names.add(ref["name"])
        return names


D = None
# make-secrets.sh output, made once for the whole run (openssl is the slow part of this test).
SECRETS_NAMESPACE = "test-ns"
SECRETS_TMP = None
SECRETS_DIR = None
SECRETS_RUN = None


def run_make_secrets(out, *args):
    return subprocess.run(["bash", os.path.join(k8s_dir(), "make-secrets.sh"), "--out", out,
                           *args], capture_output=True, text=True, timeout=30)


def setUpModule():
    global D, SECRETS_TMP, SECRETS_DIR, SECRETS_RUN
    D = Deploy()
    SECRETS_TMP = tempfile.mkdtemp(prefix="quantd-secrets-")
    unittest.addModuleCleanup(shutil.rmtree, SECRETS_TMP, True)
    SECRETS_DIR = os.path.join(SECRETS_TMP, "secrets")
    SECRETS_RUN = run_make_secrets(SECRETS_DIR, "--namespace", SECRETS_NAMESPACE)


class KustomizationTest(unittest.TestCase):
    def test_resources_exist_and_parse(self):
        self.assertTrue(D.resources, "kustomization.yaml lists no resources")
        for resource in D.resources:
            path = os.path.join(k8s_dir(), resource)
            self.assertTrue(os.path.isfile(path), f"resource {resource} does not exist")
            docs = load_yaml_file(path)
            self.assertTrue(docs, f"{resource} holds no object")
            for doc in docs:
                for field in ("apiVersion", "kind"):
                    self.assertIn(field, doc, f"{resource}: object without {field}")
                self.assertTrue(doc.get("metadata", {}).get("name"),
                                f"{resource}: {doc.get('kind')} without a name")

    def test_no_manifest_is_orphaned(self):
        on_disk = {f for f in os.listdir(k8s_dir())
                   if f.endswith((".yaml", ".yml")) and f != "kustomization.yaml"}
        listed = {posixpath.normpath(r) for r in D.resources}
        self.assertEqual(on_disk - listed, set(),
                         "manifests in deploy/k8s that kustomization.yaml does not list")

    def test_expected_objects(self):
        for kind, name in [("StatefulSet", "quantd"), ("Service", "quantd"),
                           ("Service", "quantd-headless"), ("PodDisruptionBudget", "quantd")]:
            D.one(kind, name)
        self.assertEqual(D.statefulset["spec"]["replicas"], 1)

    def test_config_env_files_exist(self):
        self.assertTrue(D.env, "the configMapGenerator yields no settings")


class WiringTest(unittest.TestCase):
    def pod_labels(self):
        return D.statefulset["spec"]["template"]["metadata"]["labels"]

    def assertSelects(self, selector, what):
        self.assertTrue(selector, f"{what} has an empty selector")
        for key, value in selector.items():
            self.assertEqual(self.pod_labels().get(key), value,
                             f"{what} selects {key}={value}, which the pod template lacks")

    def test_service_target_ports_are_named_container_ports(self):
        ports = D.container_ports
        for svc in D.find("Service"):
            self.assertTrue(svc["spec"].get("ports"), f"Service {svc['metadata']['name']}")
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort")
                self.assertIsInstance(target, str, f"Service {svc['metadata']['name']} port "
                                      f"{p.get('name')}: targetPort should name a container port")
                self.assertIn(target, ports, f"Service {svc['metadata']['name']}: targetPort "
                              f"{target} is not a container port")

    def test_service_quantd_serves_grpc_and_metrics(self):
        svc = D.one("Service", "quantd")
        targets = {p["targetPort"]: p["port"] for p in svc["spec"]["ports"]}
        self.assertEqual(set(targets), {"grpc", "metrics"})
        for name, port in targets.items():
            self.assertEqual(port, D.container_ports[name], f"Service port {name}")

    def test_selectors_match_pod_labels(self):
        for svc in D.find("Service"):
            self.assertSelects(svc["spec"].get("selector"), f"Service {svc['metadata']['name']}")
        self.assertSelects(D.statefulset["spec"]["selector"]["matchLabels"], "StatefulSet")
        for pdb in D.find("PodDisruptionBudget"):
            self.assertSelects(pdb["spec"]["selector"]["matchLabels"],
                               f"PodDisruptionBudget {pdb['metadata']['name']}")
        self.assertTrue(D.find("PodDisruptionBudget"), "no PodDisruptionBudget")

    def test_service_name_is_the_headless_service(self):
        name = D.statefulset["spec"]["serviceName"]
        svc = D.one("Service", name)
        self.assertEqual(svc["spec"].get("clusterIP"), "None",
                         f"serviceName {name} is not a headless Service")


class ProbeTest(unittest.TestCase):
    def test_probes_are_grpc_on_the_health_port(self):
        self.assertIn("health", D.container_ports, "no container port named health")
        health = D.container_ports["health"]
        for probe_name in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = D.container.get(probe_name)
            self.assertIsNotNone(probe, f"no {probe_name}")
            handlers = {"grpc", "httpGet", "tcpSocket", "exec"} & set(probe)
            self.assertEqual(handlers, {"grpc"}, f"{probe_name} should be a native gRPC probe")
            self.assertEqual(probe["grpc"].get("port"), health,
                             f"{probe_name} does not probe the health port {health}")

    def test_startup_probe_allows_a_slow_open(self):
        probe = D.container["startupProbe"]
        budget = probe.get("periodSeconds", 10) * probe.get("failureThreshold", 3)
        self.assertGreaterEqual(budget, 120, "startup probe gives RocksDB under 2 minutes")


class VolumeTest(unittest.TestCase):
    def test_every_mount_names_a_volume(self):
        volumes = {v["name"] for v in D.pod_spec.get("volumes", [])}
        claims = {t["metadata"]["name"] for t in D.statefulset["spec"]["volumeClaimTemplates"]}
        self.assertEqual(volumes & claims, set(), "a volume and a claim template share a name")
        for m in D.container.get("volumeMounts", []):
            self.assertIn(m["name"], volumes | claims, f"mount {m['mountPath']}")

    def test_data_volume_claim(self):
        claims = {t["metadata"]["name"]: t for t in D.statefulset["spec"]["volumeClaimTemplates"]}
        self.assertIn("data", claims)
        spec = claims["data"]["spec"]
        self.assertEqual(spec["accessModes"], ["ReadWriteOnce"])
        self.assertGreater(quantity_bytes(spec["resources"]["requests"]["storage"]), 0)
        self.assertFalse(D.mount_of_volume("data").get("readOnly", False))

    def test_config_maps_and_secrets_are_produced_by_the_kustomization(self):
        for kind in ("ConfigMap", "Secret"):
            referenced, produced = D.referenced_names(kind), D.produced_names(kind)
            self.assertEqual(referenced - produced, set(),
                             f"{kind}s the pod uses that the kustomization does not produce")
            self.assertEqual(produced - referenced, set(),
                             f"{kind}s the kustomization produces that nothing uses")
        self.assertIn("configMapRef", "".join(str(e) for e in D.container.get("envFrom", [])),
                      "settings should come from a ConfigMap through envFrom")

    def test_secrets_are_mounted_read_only(self):
        for v in D.pod_spec.get("volumes", []):
            if "secret" in v:
                self.assertTrue(D.mount_of_volume(v["name"]).get("readOnly"),
                                f"Secret volume {v['name']} is writable")

    def test_tls_secret_type_and_keys(self):
        generator = D.secret_generator("quantd-tls")
        self.assertEqual(generator.get("type"), "kubernetes.io/tls")
        self.assertEqual(set(generator_files(generator)), {"tls.crt", "tls.key", "ca.crt"})
        self.assertEqual(set(generator_files(D.secret_generator("quantd-auth"))), {"tokens"})


class SecretsScriptTest(unittest.TestCase):
    NAMESPACE = SECRETS_NAMESPACE

    def openssl(self, *args):
        return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30)

    def path(self, name):
        return os.path.join(SECRETS_DIR, name)

    def test_script_succeeds(self):
        self.assertEqual(SECRETS_RUN.returncode, 0, SECRETS_RUN.stderr)

    def test_writes_exactly_the_generator_files(self):
        wanted = {}
        for generator in D.secret_generators:
            for key, rel in generator_files(generator).items():
                self.assertEqual(posixpath.dirname(posixpath.normpath(rel)), "secrets",
                                 f"{generator['name']}: {rel} is not in deploy/k8s/secrets/")
                wanted[posixpath.basename(rel)] = generator["name"]
        written = set(os.listdir(SECRETS_DIR))
        self.assertEqual(written - NOT_FOR_THE_CLUSTER, set(wanted))
        for name in NOT_FOR_THE_CLUSTER:
            self.assertNotIn(name, wanted, f"{name} must stay off the cluster")

    def test_certificate_verifies_against_the_ca(self):
        base = ["verify", "-CAfile", self.path("ca.crt")]
        result = self.openssl(*base, self.path("tls.crt"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        for host in ("quantd", f"quantd.{self.NAMESPACE}.svc", "quantd-0.quantd-headless",
                     "localhost"):
            result = self.openssl(*base, "-verify_hostname", host, self.path("tls.crt"))
            self.assertEqual(result.returncode, 0, f"{host}: {result.stdout}{result.stderr}")
        result = self.openssl(*base, "-verify_ip", "127.0.0.1", self.path("tls.crt"))
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        result = self.openssl(*base, "-verify_hostname", "elsewhere.example", self.path("tls.crt"))
        self.assertNotEqual(result.returncode, 0, "the certificate matches any host name")

    def test_key_matches_certificate(self):
        from_key = self.openssl("pkey", "-in", self.path("tls.key"), "-pubout")
        from_cert = self.openssl("x509", "-in", self.path("tls.crt"), "-noout", "-pubkey")
        self.assertEqual(from_key.returncode, 0, from_key.stderr)
        self.assertEqual(from_key.stdout, from_cert.stdout)

    def test_tokens_file(self):
        scopes = {}
        with open(self.path("tokens"), encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                m = re.fullmatch(r"(read|write) ([0-9a-f]{64})", line)
                self.assertIsNotNone(m, f"bad tokens line {line!r}")
                scopes[m.group(1)] = m.group(2)
        self.assertEqual(set(scopes), {"read", "write"})
        self.assertNotEqual(scopes["read"], scopes["write"])

    def test_private_files_are_owner_only(self):
        for name in ("tokens", "tls.key", "ca.key"):
            self.assertEqual(os.stat(self.path(name)).st_mode & 0o077, 0, name)

    def test_refuses_to_overwrite_without_force(self):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "secrets")
            shutil.copytree(SECRETS_DIR, out)
            with open(os.path.join(out, "tokens"), "rb") as f:
                before = f.read()
            again = run_make_secrets(out)
            self.assertNotEqual(again.returncode, 0, "make-secrets.sh overwrote existing files")
            with open(os.path.join(out, "tokens"), "rb") as f:
                self.assertEqual(f.read(), before)
            forced = run_make_secrets(out, "--force")
            self.assertEqual(forced.returncode, 0, forced.stderr)
            with open(os.path.join(out, "tokens"), "rb") as f:
                self.assertNotEqual(f.read(), before, "--force did not make new tokens")


class ConfigTest(unittest.TestCase):
    def setting(self, name):
        self.assertIn(name, D.env, f"{name} is not set in the ConfigMap")
        return D.env[name]

    def test_storage_on_the_data_volume(self):
        data = D.mount_of_volume("data")["mountPath"]
        db, backups = self.setting("QUANTD_DATA_DIR"), self.setting("QUANTD_BACKUP_DIR")
        for name, path in (("QUANTD_DATA_DIR", db), ("QUANTD_BACKUP_DIR", backups)):
            self.assertTrue(under(path, data), f"{name}={path} is not under {data}")
        self.assertFalse(under(backups, db) or under(db, backups) or db == backups,
                         "database and backups must be separate directories")

    def test_file_settings_under_their_secret_mounts(self):
        files = {"QUANTD_TOKENS_FILE": "quantd-auth", "QUANTD_TLS_CERT": "quantd-tls",
                 "QUANTD_TLS_KEY": "quantd-tls", "QUANTD_TLS_CLIENT_CA": "quantd-tls"}
        settings = {**D.commented_env, **D.env}
        self.assertIn("QUANTD_TLS_CLIENT_CA", D.commented_env,
                      "QUANTD_TLS_CLIENT_CA should be present but commented out")
        self.assertNotIn("QUANTD_TLS_CLIENT_CA", D.env, "client certificates on by default")
        for name, secret in files.items():
            self.assertIn(name, settings)
            path = settings[name]
            mount = D.mount_of_volume(D.secret_volume(secret)["name"])["mountPath"]
            self.assertEqual(posixpath.dirname(path), posixpath.normpath(mount),
                             f"{name}={path} is not in the mount of Secret {secret}")
            keys = generator_files(D.secret_generator(secret))
            self.assertIn(posixpath.basename(path), keys,
                          f"{name}={path}: Secret {secret} has no key of that name")

    def test_listen_ports_are_the_container_ports(self):
        ports = D.container_ports
        for setting, port_name in (("QUANTD_LISTEN", "grpc"), ("QUANTD_HEALTH_LISTEN", "health"),
                                   ("QUANTD_METRICS_ADDR", "metrics")):
            self.assertIn(port_name, ports, f"no container port named {port_name}")
            self.assertEqual(port_of(self.setting(setting)), ports[port_name], setting)
        self.assertEqual(len(set(ports.values())), len(ports), "two container ports share a number")

    def test_dockerfile_exposes_the_container_ports(self):
        expose, _, _ = dockerfile()
        self.assertEqual(expose, set(D.container_ports.values()))

    def test_dockerfile_defaults_agree(self):
        _, env, _ = dockerfile()
        for name in ("QUANTD_LISTEN", "QUANTD_HEALTH_LISTEN", "QUANTD_METRICS_ADDR",
                     "QUANTD_DATA_DIR", "QUANTD_BACKUP_DIR"):
            self.assertEqual(env.get(name), self.setting(name), f"Dockerfile ENV {name}")

    def test_dockerfile_healthcheck_asks_the_health_port_with_quantctl(self):
        (healthcheck,) = dockerfile_lines("HEALTHCHECK")
        m = re.search(r"\bCMD\s+(\[.*\])", healthcheck)
        self.assertIsNotNone(m, f"HEALTHCHECK has no exec-form CMD: {healthcheck}")
        command = json.loads(m.group(1))
        self.assertEqual(posixpath.basename(command[0]), "quantctl")
        self.assertIn("health", command)
        self.assertTrue(any("quantctl" in c and command[0].startswith("/usr/local/bin/")
                            for c in dockerfile_lines("COPY")),
                        "quantctl is not copied into the image")
        address = command[command.index("--addr") + 1]
        _, env, _ = dockerfile()
        self.assertEqual(port_of(address), port_of(env["QUANTD_HEALTH_LISTEN"]),
                         "the HEALTHCHECK does not ask the health port")
        self.assertIn("--timeout", command)
        timeout = re.search(r"--timeout=(\d+)s", healthcheck)
        self.assertIsNotNone(timeout, "HEALTHCHECK without --timeout")
        self.assertLess(float(command[command.index("--timeout") + 1]), int(timeout.group(1)),
                        "quantctl's deadline must end before Docker's health-check timeout")

    def test_dockerfile_copies_every_directory_the_build_needs(self):
        # The image builds without tests and benchmarks: every other add_subdirectory of the
        # top-level CMakeLists.txt must be in the build stage.
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt"), encoding="utf-8") as f:
            needed = set(re.findall(r"^add_subdirectory\((\w+)\)", f.read(), re.M))
        needed -= {"tests", "bench"}
        copied = {c.split()[0] for c in dockerfile_lines("COPY") if not c.startswith("--")}
        self.assertTrue(needed, "no add_subdirectory found in CMakeLists.txt")
        self.assertEqual(needed - copied, set(), "directories the image build needs but lacks")

    def test_dockerfile_grace_fits_docker_stop(self):
        # `docker stop` kills after 10 s unless given --stop-timeout / -t; the image's drain
        # must end before, leaving time to close the database.
        _, env, _ = dockerfile()
        self.assertLessEqual(int(env["QUANTD_SHUTDOWN_GRACE"]), 8)

    def test_no_service_links_into_the_flag_namespace(self):
        # Service links name variables after Services: "quantd" gives QUANTD_PORT=tcp://...,
        # which the server would read as the flag --port.
        prefixed = [s["metadata"]["name"] for s in D.find("Service")
                    if s["metadata"]["name"].upper().replace("-", "_").startswith("QUANTD")]
        if prefixed:
            self.assertIs(D.pod_spec.get("enableServiceLinks"), False,
                          f"Services {prefixed} would inject QUANTD_* variables")

    def test_termination_grace_exceeds_shutdown_grace(self):
        grace = int(self.setting("QUANTD_SHUTDOWN_GRACE"))
        self.assertGreater(D.pod_spec.get("terminationGracePeriodSeconds", 30), grace)

    def test_security_context(self):
        _, _, user = dockerfile()
        self.assertIsNotNone(user, "the Dockerfile has no USER")
        uid, _, gid = user.partition(":")
        self.assertTrue(uid.isdigit(), f"Dockerfile USER {user} should be numeric")
        pod = D.pod_spec.get("securityContext", {})
        self.assertIs(pod.get("runAsNonRoot"), True)
        self.assertEqual(pod.get("runAsUser"), int(uid), "runAsUser is not the Dockerfile's USER")
        self.assertEqual(pod.get("runAsGroup"), int(gid or uid))
        self.assertEqual(pod.get("fsGroup"), int(gid or uid))
        self.assertEqual(pod.get("seccompProfile", {}).get("type"), "RuntimeDefault")
        container = D.container.get("securityContext", {})
        self.assertIs(container.get("allowPrivilegeEscalation"), False)
        self.assertIs(container.get("readOnlyRootFilesystem"), True)
        self.assertIn("ALL", container.get("capabilities", {}).get("drop", []))

    def test_resources(self):
        resources = D.container.get("resources", {})
        requests, limits = resources.get("requests", {}), resources.get("limits", {})
        self.assertIn("cpu", requests)
        self.assertIn("memory", requests)
        self.assertIn("memory", limits)
        self.assertGreaterEqual(quantity_bytes(limits["memory"]),
                                quantity_bytes(requests["memory"]))

    def test_scrape_annotations(self):
        annotations = D.statefulset["spec"]["template"]["metadata"].get("annotations", {})
        self.assertEqual(annotations.get("prometheus.io/scrape"), "true")
        self.assertEqual(annotations.get("prometheus.io/port"), str(D.container_ports["metrics"]))
        self.assertEqual(annotations.get("prometheus.io/path"), "/metrics")

    def test_image(self):
        self.assertEqual(D.container["image"], "quantd:latest")


class FlagsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not QUANTD_BINARY or not os.access(QUANTD_BINARY, os.X_OK):
            raise AssertionError(f"quantd binary {QUANTD_BINARY!r} is not executable; build it")
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUANTD_")}
        result = subprocess.run([QUANTD_BINARY, "--help"], capture_output=True, text=True,
                                env=env, timeout=30)
        if result.returncode != 0:
            raise AssertionError(f"`quantd --help` exited {result.returncode}")
        cls.flags = set(re.findall(r"^\s*--([a-z0-9_]+)", result.stdout + result.stderr,
                                   re.MULTILINE))
        if "data_dir" not in cls.flags:
            raise AssertionError(f"cannot read flags from `quantd --help`:\n{result.stdout}")

    def settings(self):
        names = set(D.env) | set(D.commented_env)
        for name in names:
            self.assertTrue(name.startswith("QUANTD_"), f"{name} is not a QUANTD_ setting")
        return {name[len("QUANTD_"):].lower() for name in names}

    def test_every_setting_is_a_server_flag(self):
        missing = sorted(f for f in self.settings() if f not in self.flags)
        self.assertEqual(missing, [], "QUANTD_ settings the server has no flag for")


@unittest.skipUnless(shutil.which("kubectl"), "kubectl is not on PATH")
class KustomizeBuildTest(unittest.TestCase):
    """`kubectl kustomize` on a copy of deploy/k8s with the secrets make-secrets.sh made."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="quantd-kustomize-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)  # runs even if setUpClass fails
        copy = os.path.join(cls.tmp, "k8s")
        shutil.copytree(k8s_dir(), copy, ignore=shutil.ignore_patterns("secrets"))
        if SECRETS_RUN.returncode != 0:
            raise AssertionError(f"make-secrets.sh failed: {SECRETS_RUN.stderr}")
        shutil.copytree(SECRETS_DIR, os.path.join(copy, "secrets"))
        built = subprocess.run(["kubectl", "kustomize", copy], capture_output=True, text=True,
                               timeout=60)
        if built.returncode != 0:
            raise AssertionError(f"kubectl kustomize failed: {built.stderr}")
        cls.objects = [d for d in yaml.safe_load_all(built.stdout) if d is not None]

    def named(self, kind):
        return {o["metadata"]["name"]: o for o in self.objects if o["kind"] == kind}

    def test_references_resolve_to_generated_objects(self):
        sts = self.named("StatefulSet")["quantd"]
        pod = sts["spec"]["template"]["spec"]
        config_maps, secrets = self.named("ConfigMap"), self.named("Secret")
        for c in pod["containers"]:
            for e in c.get("envFrom", []):
                self.assertIn(e["configMapRef"]["name"], config_maps)
        for v in pod.get("volumes", []):
            if "secret" in v:
                self.assertIn(v["secret"]["secretName"], secrets)
        self.assertEqual(len(config_maps), len(D.config_generators))
        self.assertEqual(len(secrets), len(D.secret_generators))

    def test_generated_contents(self):
        (config,) = self.named("ConfigMap").values()
        self.assertEqual(config["data"], D.env)
        tls = [s for s in self.named("Secret").values() if s.get("type") == "kubernetes.io/tls"]
        self.assertEqual(len(tls), 1)
        self.assertEqual(set(tls[0]["data"]), {"tls.crt", "tls.key", "ca.crt"})

    def test_image(self):
        sts = self.named("StatefulSet")["quantd"]
        self.assertEqual(sts["spec"]["template"]["spec"]["containers"][0]["image"],
                         "quantd:latest")


def main():
    global SOURCE_DIR, QUANTD_BINARY
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source-dir", required=True, help="repository root")
    parser.add_argument("--quantd", required=True, help="the quantd server binary")
    args, rest = parser.parse_known_args()
    SOURCE_DIR = os.path.abspath(args.source_dir)
    QUANTD_BINARY = os.path.abspath(args.quantd)
    unittest.main(argv=[sys.argv[0], *rest], verbosity=2)


if __name__ == "__main__":
    main()
