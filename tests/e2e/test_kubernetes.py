"""examples/kubernetes/: the manifests parse (python3-yaml), are the objects
the README describes, and their numbers fit together: the start-up budget
outlasts the Gunicorn timeout, which outlasts wait_timeout; liveness never
asks the database; the grace period outlasts Gunicorn's graceful timeout;
the rollout deadline outlasts the start-up budget; the image is the one
examples/docker builds, with the drop-in.  No server, no cluster."""

import re
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parent.parent.parent / "examples" / "kubernetes"
APP = Path(__file__).resolve().parent.parent.parent / "examples" / "flask-alembic" / "app.py"


def load(name):
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def gunicorn_arg(env, flag):
    m = re.search(r"--%s[ =](\d+)" % flag, env.get("GUNICORN_CMD_ARGS") or "")
    return int(m.group(1)) if m else None


def budget(probe):
    return probe["periodSeconds"] * probe["failureThreshold"]


def app_routes():
    return set(re.findall(r'@app\.get\("([^"]+)"\)', APP.read_text()))


def test_deployment_with_the_drop_in():
    objs = load("deployment.yaml")
    assert set(objs) == {("Deployment", "shop"), ("Service", "shop")}
    dep = objs[("Deployment", "shop")]["spec"]
    pod = dep["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert env["LD_PRELOAD"] == "/usr/local/lib/libmigshim.so"
    assert env["RUN_DB_MIGRATIONS_ON_STARTUP"] == "true"
    assert "command" not in c and "args" not in c  # the image's CMD, unchanged
    wait = float(env["MIGSHIM_WAIT_TIMEOUT"])
    assert env["MIGSHIM_ON_TIMEOUT"] in ("fail", "proceed")
    worker_timeout = gunicorn_arg(env, "timeout")
    graceful = gunicorn_arg(env, "graceful-timeout")
    # the order of the limits: the shim gives up, then Gunicorn, then the kubelet
    assert wait < worker_timeout < budget(c["startupProbe"]), \
        (wait, worker_timeout, budget(c["startupProbe"]))
    assert dep["progressDeadlineSeconds"] > budget(c["startupProbe"])
    # probes: start-up and readiness on the database's state, liveness not
    routes = app_routes()
    for p in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[p]["httpGet"]["path"] in routes, (p, routes)
    assert c["startupProbe"]["httpGet"]["path"] == "/ready"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] != "/ready"
    assert "initialDelaySeconds" not in c["livenessProbe"]  # the startupProbe holds it off
    assert pod["terminationGracePeriodSeconds"] > graceful
    ru = dep["strategy"]
    assert ru["type"] == "RollingUpdate" and ru["rollingUpdate"]["maxUnavailable"] == 0
    svc = objs[("Service", "shop")]["spec"]
    assert svc["selector"] == dep["selector"]["matchLabels"] == dep["template"]["metadata"]["labels"]
    assert svc["ports"][0]["targetPort"] == c["ports"][0]["name"]


def test_the_job_alternative():
    objs = load("job.yaml")
    assert set(objs) == {("Job", "shop-migrate"), ("Deployment", "shop")}
    job = objs[("Job", "shop-migrate")]["spec"]
    (m,) = job["template"]["spec"]["containers"]
    assert m["command"] == ["alembic", "upgrade", "head"]
    assert job["template"]["spec"]["restartPolicy"] in ("Never", "OnFailure")
    assert job["backoffLimit"] >= 1 and job["activeDeadlineSeconds"] > \
        float(env_of(m)["MIGSHIM_WAIT_TIMEOUT"])
    pod = objs[("Deployment", "shop")]["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert env["RUN_DB_MIGRATIONS_ON_STARTUP"] == "false"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] != "/ready"
    assert pod["terminationGracePeriodSeconds"] > gunicorn_arg(env, "graceful-timeout")
    # the image is the same as the drop-in's
    drop_in = load("deployment.yaml")[("Deployment", "shop")]["spec"]["template"]["spec"]
    assert m["image"] == c["image"] == drop_in["containers"][0]["image"]


def test_the_image_is_examples_docker():
    """The manifests run examples/docker's image: its ENV LD_PRELOAD and
    its CMD, which the Deployment does not override."""
    df = (K8S.parent / "docker" / "Dockerfile").read_text()
    assert "ENV LD_PRELOAD=/usr/local/lib/libmigshim.so" in df
    assert 'CMD ["gunicorn", "app:app"]' in df
    assert "bind = os.environ.get(\"BIND\"" in (APP.parent / "gunicorn.conf.py").read_text()
