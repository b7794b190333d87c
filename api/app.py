"""The Falcon application: routes, middleware and error handling. No logic lives here."""

from __future__ import annotations

import html
import json
import logging
from importlib.metadata import version

import falcon

from pvc.api import errors
from pvc.api.auth import AuthMiddleware
from pvc.api.context import Context, from_environment
from pvc.api.models import ErrorBody
from pvc.api.paths import EncodedSlashes
from pvc.api.resources import cluster, health, keys, networks, nodes, tasks, vmchanges, vmnetworks, vms, vmvolumes
from pvc.api.resources.provisioner import create, images, ovas, profiles, templates, userdata
from pvc.api.resources.storage import osds, pools, snapshots, status, volumes
from pvc.api.spec import openapi, operation
from pvc.config.schema import API_PREFIX

log = logging.getLogger("pvc.api")


def routes(ctx: Context, pvc_version: str) -> list[tuple[str, object]]:
    p = API_PREFIX
    return [
        (f"{p}/health", health.HealthResource(ctx, pvc_version)),
        (f"{p}/cluster", cluster.ClusterResource(ctx)),
        (f"{p}/cluster/faults", cluster.FaultsResource(ctx)),
        (f"{p}/cluster/faults/{{fault_id}}", cluster.FaultResource(ctx)),
        (f"{p}/cluster/maintenance", cluster.MaintenanceResource(ctx)),
        (f"{p}/cluster/formation", cluster.FormationResource(ctx)),
        (f"{p}/cluster/keys", keys.KeysResource(ctx)),
        (f"{p}/cluster/keys/{{key_name}}", keys.KeyResource(ctx)),
        (f"{p}/cluster/keys/{{key_name}}/restore", keys.KeyRestoreResource(ctx)),
        (f"{p}/nodes", nodes.NodesResource(ctx)),
        (f"{p}/nodes/{{node}}", nodes.NodeResource(ctx)),
        (f"{p}/nodes/{{node}}/flush", nodes.NodeFlushResource(ctx)),
        (f"{p}/nodes/{{node}}/ready", nodes.NodeReadyResource(ctx)),
        (f"{p}/nodes/{{node}}/primary", nodes.NodePrimaryResource(ctx)),
        (f"{p}/nodes/{{node}}/log", nodes.NodeLogResource(ctx)),
        (f"{p}/vms", vms.VmsResource(ctx)),
        (f"{p}/vms/{{vm}}", vms.VmResource(ctx)),
        (f"{p}/vms/{{vm}}/state", vms.VmStateResource(ctx)),
        (f"{p}/vms/{{vm}}/migrate", vms.VmMigrateResource(ctx)),
        (f"{p}/vms/{{vm}}/console", vms.VmConsoleResource(ctx)),
        (f"{p}/vms/{{vm}}/networks", vmnetworks.VmNetworksResource(ctx)),
        (f"{p}/vms/{{vm}}/networks/{{vni}}", vmnetworks.VmNetworkResource(ctx)),
        (f"{p}/vms/{{vm}}/volumes", vmvolumes.VmVolumesResource(ctx)),
        (f"{p}/vms/{{vm}}/volumes/{{pool}}/{{volume}}", vmvolumes.VmVolumeResource(ctx)),
        (f"{p}/vms/{{vm}}/rename", vmchanges.VmRenameResource(ctx)),
        (f"{p}/vms/{{vm}}/resources", vmchanges.VmResourcesResource(ctx)),
        (f"{p}/storage", status.StorageStatusResource(ctx)),
        (f"{p}/storage/pools", pools.PoolsResource(ctx)),
        (f"{p}/storage/pools/{{pool}}", pools.PoolResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes", volumes.VolumesResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes/{{volume}}", volumes.VolumeResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes/{{volume}}/clone", volumes.VolumeCloneResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes/{{volume}}/copy", volumes.VolumeCopyResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes/{{volume}}/data", volumes.VolumeDataResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes/{{volume}}/snapshots", snapshots.SnapshotsResource(ctx)),
        (f"{p}/storage/pools/{{pool}}/volumes/{{volume}}/snapshots/{{snapshot}}", snapshots.SnapshotResource(ctx)),
        (
            f"{p}/storage/pools/{{pool}}/volumes/{{volume}}/snapshots/{{snapshot}}/rollback",
            snapshots.SnapshotRollbackResource(ctx),
        ),
        (f"{p}/storage/osds", osds.OsdsResource(ctx)),
        (f"{p}/storage/osds/requests", osds.OsdRequestsResource(ctx)),
        (f"{p}/storage/osds/{{osd}}", osds.OsdResource(ctx)),
        (f"{p}/storage/osds/{{osd}}/state", osds.OsdStateResource(ctx)),
        (f"{p}/networks", networks.NetworksResource(ctx)),
        (f"{p}/networks/{{vni}}", networks.NetworkResource(ctx)),
        (f"{p}/networks/{{vni}}/leases", networks.NetworkLeasesResource(ctx)),
        (f"{p}/networks/{{vni}}/reservations", networks.NetworkReservationsResource(ctx)),
        (f"{p}/networks/{{vni}}/reservations/{{mac}}", networks.NetworkReservationResource(ctx)),
        (f"{p}/networks/{{vni}}/acls", networks.NetworkAclsResource(ctx)),
        (f"{p}/networks/{{vni}}/acls/{{description}}", networks.NetworkAclResource(ctx)),
        (f"{p}/provisioner/images", images.ImagesResource(ctx)),
        (f"{p}/provisioner/images/{{image}}", images.ImageResource(ctx)),
        (f"{p}/provisioner/templates/system", templates.SystemTemplatesResource(ctx)),
        (f"{p}/provisioner/templates/system/{{template}}", templates.SystemTemplateResource(ctx)),
        (f"{p}/provisioner/templates/network", templates.NetworkTemplatesResource(ctx)),
        (f"{p}/provisioner/templates/network/{{template}}", templates.NetworkTemplateResource(ctx)),
        (f"{p}/provisioner/templates/storage", templates.StorageTemplatesResource(ctx)),
        (f"{p}/provisioner/templates/storage/{{template}}", templates.StorageTemplateResource(ctx)),
        (f"{p}/provisioner/userdata", userdata.UserdataDocumentsResource(ctx)),
        (f"{p}/provisioner/userdata/{{userdata}}", userdata.UserdataDocumentResource(ctx)),
        (f"{p}/provisioner/profiles", profiles.ProfilesResource(ctx)),
        (f"{p}/provisioner/profiles/{{profile}}", profiles.ProfileResource(ctx)),
        (f"{p}/provisioner/ovas", ovas.OvasResource(ctx)),
        (f"{p}/provisioner/ovas/{{ova}}", ovas.OvaResource(ctx)),
        (f"{p}/provisioner/create", create.CreateResource(ctx)),
        (f"{p}/tasks", tasks.TasksResource(ctx)),
        (f"{p}/tasks/{{task_id}}", tasks.TaskResource(ctx)),
    ]


class SpecResource:
    def __init__(self, document: dict) -> None:
        self.document = document

    @operation(summary="This API's OpenAPI 3.1 document", response=dict, auth=False, errors=(), tags=["docs"])
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> dict:
        return self.document


class DocsResource:
    def __init__(self, document: dict) -> None:
        self.page = render_docs(document)

    @operation(
        summary="A browsable page of this API",
        auth=False,
        errors=(),
        tags=["docs"],
        media_type="text/html",
        response=str,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.content_type = falcon.MEDIA_HTML
        resp.text = self.page


def render_docs(doc: dict) -> str:
    """A self-contained HTML page listing every operation (no external scripts: nodes may have no Internet)."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(doc['info']['title'])}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:auto}code,pre{background:#f4f4f4}"
        ".m{display:inline-block;width:5em;font-weight:bold}</style></head><body>",
        f"<h1>{html.escape(doc['info']['title'])} {html.escape(doc['info']['version'])}</h1>",
        f"<p>{html.escape(doc['info']['description'])} The machine-readable document is "
        f"<a href='{API_PREFIX}/openapi.json'>openapi.json</a>.</p>",
    ]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            parts.append(f"<h3><span class='m'>{method.upper()}</span><code>{html.escape(path)}</code></h3>")
            parts.append(f"<p>{html.escape(op['summary'])}</p>")
            if "description" in op:
                parts.append(f"<p>{html.escape(op['description'])}</p>")
            for param in op.get("parameters", []):
                parts.append(f"<div>{param['in']} <code>{html.escape(param['name'])}</code></div>")
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
                schema = doc["components"]["schemas"][ref]
                parts.append(f"<pre>{html.escape(json.dumps(schema.get('properties', {}), indent=1))}</pre>")
            parts.append("<div>responses: " + ", ".join(sorted(op["responses"])) + "</div>")
    parts.append("</body></html>")
    return "".join(parts)


def build_document(table: list[tuple[str, object]] | None = None, pvc_version: str | None = None) -> dict:
    """The OpenAPI document (resources are only inspected, never called, so no cluster is needed)."""
    pvc_version = pvc_version or version("pvc")
    # The resources are only inspected, never called, so they get no Context (their type says they need one).
    table = table if table is not None else routes(None, pvc_version)  # type: ignore[arg-type]
    return openapi(table, ErrorBody, "PVC API", pvc_version)


def create_app(ctx: Context | None = None) -> falcon.App:
    """The WSGI application. Without `ctx`, reads PVC_CONFIG (cluster.toml) and PVC_ZOOKEEPER."""
    ctx = ctx or from_environment()
    pvc_version = version("pvc")
    app = falcon.App(middleware=(EncodedSlashes(), AuthMiddleware(ctx.api_keys, ctx.keys.pepper)), cors_enable=False)
    app.req_options.strip_url_path_trailing_slash = True
    errors.install(app)
    table = routes(ctx, pvc_version)
    document = build_document(table, pvc_version)
    table += [(f"{API_PREFIX}/openapi.json", SpecResource(document)), (f"{API_PREFIX}/docs", DocsResource(document))]
    for path, resource in table:
        app.add_route(path, resource)
    return app
