# SomaBrain authorization policy: the one file both OPAs load.
#
# compose mounts this file into the OPA container (sb_opa:8181); k8s ships it through the kustomize
# configMapGenerator in k8s/kustomization.yaml (sb-opa:8181). Where no opa binary exists, the regorus-based
# stand-in (compose/airgap/opa/opa_standin.py) serves it.
#
# The API asks:  POST /v1/data/somabrain/allow  with
#   input = {
#     "method":  "POST",            HTTP method, upper case
#     "path":    "/recall",         request path, no query string
#     "tenant":  "acme",            tenant from the verified token (or X-Tenant-ID when auth is disabled)
#     "subject": "user-42",         token "sub"
#     "roles":   ["reader"],        token roles claim (array of strings)
#     "requested_tenant": "acme"    optional: a tenant the client ALSO asked for (e.g. an X-Tenant-ID header sent
#   }                               alongside a token); when present it must equal "tenant"
#
# Decision: data.somabrain.allow is true only when all of these hold (anything else is denied):
#   - input is an object; subject is a non-empty string (<= 256 chars, no control characters);
#   - tenant matches ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$;
#   - requested_tenant, when present, equals tenant (cross-tenant attempts are denied);
#   - roles is an array and one of its roles grants the route:
#       reader -> POST /recall                      writer -> POST /remember, DELETE /memory/{id}
#       actor  -> POST /act                         admin  -> all of the above
#     and any of those roles may read GET /openapi.json.
# data.somabrain.reasons is the set of reasons a request is denied (empty when allowed); it explains, it never
# grants: `allow` is built only from positive checks, so a malformed input can never allow by missing a reason.
#
# Syntax: Rego v1 style that OPA 0.48 also parses (future.keywords imports, `if`/`contains` everywhere; no
# `import rego.v1`). tests/policy/ runs it on the regorus engine in both v1 and v0 (OPA 0.x) modes.
package somabrain

import future.keywords.contains
import future.keywords.if
import future.keywords.in

default allow := false

allow if {
	identity_ok
	tenant_consistent
	route_granted
}

# --- routes --------------------------------------------------------------------------------------------------

# Which roles may call which route. Keys are "METHOD /route-template".
route_grants := {
	"POST /recall": {"reader", "admin"},
	"POST /remember": {"writer", "admin"},
	"DELETE /memory/{id}": {"writer", "admin"},
	"POST /act": {"actor", "admin"},
	"GET /openapi.json": {"reader", "writer", "actor", "admin"},
}

# Routes whose path has no parameter: "METHOD PATH" must be one of these exactly.
exact_routes := {"POST /recall", "POST /remember", "POST /act", "GET /openapi.json"}

route := candidate if {
	is_string(input.method)
	is_string(input.path)
	candidate := sprintf("%s %s", [input.method, input.path])
	candidate in exact_routes
}

# DELETE /memory/<id>, with a well-formed id (no "..", no extra segments, no query string).
route := "DELETE /memory/{id}" if {
	input.method == "DELETE"
	is_string(input.path)
	parts := split(input.path, "/")
	count(parts) == 3
	parts[0] == ""
	parts[1] == "memory"
	regex.match(`^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$`, parts[2])
}

route_granted if {
	is_array(input.roles)
	some role in input.roles
	role in route_grants[route]
}

# --- identity --------------------------------------------------------------------------------------------------

subject_ok if {
	is_string(input.subject)
	count(trim_space(input.subject)) > 0
	count(input.subject) <= 256
	not regex.match(`[\x00-\x1f\x7f]`, input.subject)
}

tenant_ok if {
	is_string(input.tenant)
	regex.match(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`, input.tenant)
}

identity_ok if {
	is_object(input)
	subject_ok
	tenant_ok
}

# requested_tenant is optional; when the key is present (even as null) its value must equal the token's tenant.
requested_tenant_present if {
	some key, _ in input
	key == "requested_tenant"
}

tenant_consistent if {
	is_object(input)
	not requested_tenant_present
}

tenant_consistent if {
	is_object(input)
	input.requested_tenant == input.tenant
}

# --- reasons (explanations only) -------------------------------------------------------------------------------

reasons contains "input_not_object" if {
	not is_object(input)
}

reasons contains "subject_invalid" if {
	is_object(input)
	not subject_ok
}

reasons contains "tenant_invalid" if {
	is_object(input)
	not tenant_ok
}

reasons contains "cross_tenant" if {
	is_object(input)
	not tenant_consistent
}

reasons contains "roles_invalid" if {
	is_object(input)
	not is_array(input.roles)
}

reasons contains "route_unknown" if {
	is_object(input)
	not route
}

reasons contains "role_not_granted" if {
	is_object(input)
	route
	not route_granted
}
