/**
 * The security policy a simulated container group runs under when none is given: a small confcom-style
 * Rego policy (one pinned container plus the usual framework rules). Like ACI's `ccePolicy`, the platform
 * carries it base64-encoded and binds sha256(policy text) into HOST_DATA. The text itself never changes
 * meaning here: only its hash matters to attestation.
 */
export const DEFAULT_SECURITY_POLICY_REGO = `package policy

# SIMULATED security policy for skr-sidecar local development and tests (not a real ccePolicy).

import future.keywords.every
import future.keywords.in

api_version := "0.10.0"
framework_version := "0.2.3"

fragments := []

containers := [
  {
    "id": "mcr.microsoft.com/aci/skr:simulated",
    "name": "skr-sidecar",
    "layers": ["0000000000000000000000000000000000000000000000000000000000000000"],
    "command": ["/skr.sh"],
    "env_rules": [
      {"pattern": "SkrSideCarArgs=.+", "strategy": "re2", "required": false},
      {"pattern": "Port=.+", "strategy": "re2", "required": false}
    ],
    "working_dir": "/",
    "mounts": [],
    "exec_processes": [],
    "signals": [],
    "allow_elevated": false,
    "allow_stdio_access": true
  }
]

allow_properties_access := false
allow_dump_stacks := false
allow_runtime_logging := false
allow_environment_variable_dropping := true
allow_unencrypted_scratch := false
allow_capability_dropping := true

mount_device := data.framework.mount_device
unmount_device := data.framework.unmount_device
mount_overlay := data.framework.mount_overlay
unmount_overlay := data.framework.unmount_overlay
create_container := data.framework.create_container
exec_in_container := data.framework.exec_in_container
exec_external := data.framework.exec_external
shutdown_container := data.framework.shutdown_container
signal_container_process := data.framework.signal_container_process
plan9_mount := data.framework.plan9_mount
plan9_unmount := data.framework.plan9_unmount
get_properties := data.framework.get_properties
dump_stacks := data.framework.dump_stacks
runtime_logging := data.framework.runtime_logging
load_fragment := data.framework.load_fragment
scratch_mount := data.framework.scratch_mount
scratch_unmount := data.framework.scratch_unmount

reason := {"errors": data.framework.errors}
`;

export const DEFAULT_SECURITY_POLICY_BASE64 = Buffer.from(DEFAULT_SECURITY_POLICY_REGO, 'utf8').toString('base64');
