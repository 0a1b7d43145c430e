"""Checks what operators deploy: the Helm chart, the alert rules and the Dockerfile.

Run by scripts/check-deploy.sh (which installs what it needs) inside the test command:

1. Render helm/partner-sync with Helm's own library (helm-python-sdk) for the default values and
   every set in helm/partner-sync/ci/, after validating each against values.schema.json.
2. Validate every rendered object against the Kubernetes schemas (kubernetes-validate, strict) for
   the oldest Kubernetes the chart supports and the newest the validator knows. The Prometheus
   Operator objects are custom resources it has no schema for; their content is checked in 4.
3. Run checkov on the rendered manifests and on deploy/Dockerfile, with deploy/checkov.yaml's
   justified skips only.
4. Check what the templates promise: the rendered config.toml passes `partner-sync check-config`;
   terminationGracePeriodSeconds matches preStop + shutdown budget; the restricted pod security
   profile; credentials only as Secret references; the checksum rolls pods on a config change; the
   autoscaler never exceeds the partition count; the NetworkPolicy's egress; the PrometheusRule holds
   exactly files/alerts.yaml; the ServiceMonitor scrapes the Service's port.
5. The schema is strict: an unknown key and a wrong type are refused; impossible combinations fail
   with a sentence.
6. `promtool check rules` and `promtool test rules` on files/alerts.yaml.

Usage: check_deploy.py <partner-sync binary> <promtool> <work dir>
"""

import json
import os
import subprocess
import sys
import tomllib

import helm_python as helm
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "helm", "partner-sync")
KUBE_VERSIONS = ["1.30.0", "1.37.0"]
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def run(cmd, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, **kw)


def render(chart, values):
    chart.validate_schema(values)
    rendered = chart.render(values, name="partner-sync", namespace="integration")
    objects = []
    for path, text in sorted(rendered.items()):
        for doc in yaml.safe_load_all(text):
            if doc:
                objects.append(doc)
    return objects


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def one(objects, kind):
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def deployment_env(objects):
    return one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0].get("env", [])


def write(objects, directory):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for o in objects:
        path = os.path.join(directory, f"{o['kind'].lower()}-{o['metadata']['name']}.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(o, f, sort_keys=False)
        paths.append((o, path))
    return paths


def check_set(name, values, binary, promtool, work):
    chart = helm.Chart.load(CHART)
    merged = chart.merge_values(values)
    objects = render(chart, values)
    directory = os.path.join(work, name)
    paths = write(objects, directory)
    print(f"\n== {name}: {len(objects)} objects: {', '.join(sorted(o['kind'] for o in objects))}")

    # 2. Kubernetes schemas.
    plain = [p for o, p in paths if o["kind"] not in CRD_KINDS]
    for version in KUBE_VERSIONS:
        r = run(["kubernetes-validate", "--strict", "--quiet", "-k", version, *plain])
        check(r.returncode == 0, f"{name}: every object is valid Kubernetes {version} (strict)\n{r.stdout}{r.stderr}".rstrip())

    # 3. checkov on the rendered manifests.
    r = run(["checkov", "--config-file", os.path.join(ROOT, "deploy", "checkov.yaml"),
             "--framework", "kubernetes", "-d", directory])
    check(r.returncode == 0, f"{name}: checkov finds nothing beyond the justified skips\n{r.stdout}{r.stderr}".rstrip())

    # 4. What the templates promise.
    config_map = next(o for o in by_kind(objects, "ConfigMap") if "config.toml" in o["data"])
    config_text = config_map["data"]["config.toml"]
    config_path = os.path.join(directory, "config.toml")
    with open(config_path, "w") as f:
        f.write(config_text)
    # The pod's environment: Secret references become placeholder values here.
    pod_env = dict(os.environ)
    for e in deployment_env(objects):
        if "secretKeyRef" in e.get("valueFrom", {}):
            pod_env[e["name"]] = "value-from-secret"
    r = run([binary, "check-config", config_path], env=pod_env)
    check(r.returncode == 0, f"{name}: the rendered config.toml passes partner-sync check-config\n{r.stdout}{r.stderr}".rstrip())
    config = tomllib.loads(config_text)

    deployment = one(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    budget = merged["shutdownBudgetSeconds"]
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    check(config["delivery"]["shutdown_budget_seconds"] == budget,
          f"{name}: the connector's shutdown budget is the chart's ({budget} s)")
    check(pod["terminationGracePeriodSeconds"] == pre_stop + budget + 10,
          f"{name}: terminationGracePeriodSeconds ({pod['terminationGracePeriodSeconds']}) = preStop {pre_stop} + budget {budget} + 10")
    port = merged["service"]["port"]
    check(config["telemetry"]["listen"] == f"0.0.0.0:{port}" and container["ports"][0]["containerPort"] == port,
          f"{name}: the connector listens on the container port {port}")
    check(container["livenessProbe"]["httpGet"]["path"] == "/health/live"
          and container["readinessProbe"]["httpGet"]["path"] == "/health/ready",
          f"{name}: liveness and readiness probe the connector's health endpoints")
    sc, psc = container["securityContext"], pod["securityContext"]
    restricted = (psc["runAsNonRoot"] and psc["runAsUser"] != 0
                  and psc["seccompProfile"]["type"] == "RuntimeDefault"
                  and sc["allowPrivilegeEscalation"] is False
                  and sc["readOnlyRootFilesystem"] is True
                  and sc["capabilities"]["drop"] == ["ALL"]
                  and not sc.get("capabilities", {}).get("add"))
    check(restricted, f"{name}: the pod meets the restricted pod security profile with a read-only root")
    check(pod["automountServiceAccountToken"] is False, f"{name}: no service account token is mounted")
    empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    spill_mounts = [m for m in container["volumeMounts"]
                    if m["name"] in empty_dirs and m["mountPath"] == config["state"]["spill_dir"]]
    check(len(spill_mounts) == 1 and not spill_mounts[0].get("readOnly"),
          f"{name}: state.spill_dir ({config['state']['spill_dir']}) is a writable emptyDir under the read-only root")
    env = {e["name"]: e for e in container.get("env", [])}
    secret_env = [n for n, e in env.items() if "secretKeyRef" in e.get("valueFrom", {})]
    expected_secret_env = [
        var for key, var in [("kafkaSaslPassword", "PARTNER_SYNC__KAFKA__SASL_PASSWORD"),
                             ("kafkaSslKeyPassword", "PARTNER_SYNC__KAFKA__SSL_KEY_PASSWORD"),
                             ("registryPassword", "PARTNER_SYNC__REGISTRY__PASSWORD"),
                             ("registryBearerToken", "PARTNER_SYNC__REGISTRY__BEARER_TOKEN")]
        if merged["secrets"][key]["name"]]
    check(sorted(secret_env) == sorted(expected_secret_env) and all("value" not in e for e in env.values()),
          f"{name}: credentials come only from Secret references ({', '.join(sorted(secret_env)) or 'none configured'})")
    check(not any(k in config.get(s, {}) for s in ("kafka", "registry")
                  for k in ("sasl_password", "password", "bearer_token", "ssl_key_password")),
          f"{name}: the ConfigMap holds no secret")

    partitions = merged["topicPartitions"]
    hpa = by_kind(objects, "HorizontalPodAutoscaler")
    if merged["autoscaling"]["enabled"]:
        want = min(merged["autoscaling"]["maxReplicas"], partitions)
        check(len(hpa) == 1 and hpa[0]["spec"]["maxReplicas"] == want,
              f"{name}: the autoscaler's maximum is {want} (asked {merged['autoscaling']['maxReplicas']}, {partitions} partitions)")
        check("replicas" not in deployment["spec"], f"{name}: the autoscaler owns the replica count")
    else:
        check(not hpa and deployment["spec"]["replicas"] <= partitions,
              f"{name}: no autoscaler; {deployment['spec']['replicas']} replicas for {partitions} partitions")
    pdb = by_kind(objects, "PodDisruptionBudget")
    check(len(pdb) == 1 and pdb[0]["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"],
          f"{name}: a PodDisruptionBudget selects the connector's pods")

    policies = by_kind(objects, "NetworkPolicy")
    if merged["networkPolicy"]["enabled"]:
        egress = policies[0]["spec"]["egress"]
        cidrs = sorted(b["ipBlock"]["cidr"] for rule in egress for b in rule["to"] if "ipBlock" in b)
        want = sorted(merged["networkPolicy"]["kafka"]["cidrs"] + merged["networkPolicy"]["registry"]["cidrs"])
        dns = [rule for rule in egress if any(p["port"] == 53 for p in rule["ports"])]
        check(cidrs == want and len(dns) == 1 and len(egress) == 3
              and policies[0]["spec"]["policyTypes"] == ["Ingress", "Egress"],
              f"{name}: the NetworkPolicy allows egress to the brokers, the registry and DNS only")
    else:
        check(not policies, f"{name}: no NetworkPolicy unless asked for")

    service = one(objects, "Service")
    # Each optional object exists exactly when it is enabled: a loop over what was rendered checks
    # nothing when the object is missing.
    dashboards = [cm for cm in by_kind(objects, "ConfigMap") if "partner-sync.json" in cm["data"]]
    for kind, key, found in [("ServiceMonitor", "serviceMonitor", by_kind(objects, "ServiceMonitor")),
                             ("PrometheusRule", "prometheusRule", by_kind(objects, "PrometheusRule")),
                             ("dashboard ConfigMap", "grafanaDashboard", dashboards)]:
        want = 1 if merged[key]["enabled"] else 0
        check(len(found) == want, f"{name}: {want} {kind} ({key}.enabled = {merged[key]['enabled']}), {len(found)} rendered")
    for monitor in by_kind(objects, "ServiceMonitor"):
        check(monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
              and monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items(),
              f"{name}: the ServiceMonitor scrapes the Service's metrics port")
    for rule in by_kind(objects, "PrometheusRule"):
        with open(os.path.join(CHART, "files", "alerts.yaml")) as f:
            expected = yaml.safe_load(f)["groups"]
        check(rule["spec"]["groups"] == expected, f"{name}: the PrometheusRule holds exactly files/alerts.yaml")
        rules_path = os.path.join(directory, "prometheusrule-groups.yaml")
        with open(rules_path, "w") as f:
            yaml.safe_dump({"groups": rule["spec"]["groups"]}, f)
        r = run([promtool, "check", "rules", rules_path])
        check(r.returncode == 0, f"{name}: promtool accepts the PrometheusRule's groups\n{r.stdout}{r.stderr}".rstrip())
    with open(os.path.join(CHART, "files", "dashboard.json")) as f:
        dashboard_file = json.load(f)
    for cm in dashboards:
        try:
            shipped = json.loads(cm["data"]["partner-sync.json"])
        except json.JSONDecodeError as e:
            shipped = None
            check(False, f"{name}: the dashboard ConfigMap holds valid JSON: {e}")
        check(shipped == dashboard_file, f"{name}: the dashboard ConfigMap holds exactly files/dashboard.json")
    return deployment


def main():
    binary, promtool, work = sys.argv[1], sys.argv[2], sys.argv[3]
    sets = [("default", None)]
    ci = os.path.join(CHART, "ci")
    for file in sorted(os.listdir(ci)):
        with open(os.path.join(ci, file)) as f:
            sets.append((file.removesuffix(".yaml"), yaml.safe_load(f)))
    deployments = {name: check_set(name, values, binary, promtool, work) for name, values in sets}

    print("\n== behaviour across renders")
    checksum = lambda d: d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
    chart = helm.Chart.load(CHART)
    changed = one(render(chart, {"config": {"kafka": {"bootstrap_servers": "other:9092"}}}), "Deployment")
    same = one(render(chart, {"podAnnotations": {"team": "integration"}}), "Deployment")
    check(checksum(changed) != checksum(deployments["default"]), "a configuration change changes the checksum annotation (pods roll)")
    check(checksum(same) == checksum(deployments["default"]), "a change outside the configuration keeps the checksum")

    # 5. The schema is strict, and impossible combinations fail with a sentence. Each refusal
    # must name what it refuses: any other error (a broken chart, a missing tool) is a failure.
    for values, why, names in [({"replicas": 3}, "an unknown top-level key", "replicas"),
                               ({"autoscaling": {"maxReplica": 3}}, "a misspelt nested key", "maxReplica"),
                               ({"replicaCount": "two"}, "a string where a number belongs", "replicaCount"),
                               ({"config": {"kafak": {}}}, "an unknown configuration section", "kafak"),
                               ({"image": {"digest": "latest"}}, "a digest that is not sha256", "digest")]:
        try:
            chart.validate_schema(values)
            check(False, f"the schema refuses {why}")
        except helm.HelmError as e:
            text = " ".join(str(e).split())
            check(names in text, f"the schema refuses {why}, naming {names}: {text[:160]}")
    for values, phrase in [({"replicaCount": 8, "topicPartitions": 4}, "exceeds topicPartitions"),
                           ({"networkPolicy": {"enabled": True}}, "needs networkPolicy.kafka.cidrs")]:
        try:
            render(chart, values)
            check(False, f"rendering refuses {values}")
        except helm.HelmError as e:
            check(phrase in str(e), f"rendering refuses {values} with a sentence: ...{phrase}...")

    # 3b. checkov on the Dockerfile.
    r = run(["checkov", "--config-file", os.path.join(ROOT, "deploy", "checkov.yaml"),
             "--framework", "dockerfile", "-f", os.path.join(ROOT, "deploy", "Dockerfile")])
    check(r.returncode == 0, f"checkov finds nothing in deploy/Dockerfile beyond the justified skips\n{r.stdout}{r.stderr}".rstrip())

    # 6. Alert rules.
    files = os.path.join(CHART, "files")
    r = run([promtool, "check", "rules", "alerts.yaml"], cwd=files)
    check(r.returncode == 0, f"promtool check rules files/alerts.yaml\n{r.stdout}{r.stderr}".rstrip())
    r = run([promtool, "test", "rules", "alerts_test.yaml"], cwd=files)
    check(r.returncode == 0, f"promtool test rules: every alert fires when it should\n{r.stdout}{r.stderr}".rstrip())

    print()
    if failures:
        print(f"deploy checks: {len(failures)} failed")
        sys.exit(1)
    print("deploy checks: all passed")


if __name__ == "__main__":
    main()
