//! Kubernetes: the plan as an Indexed Job, one completion index per shard
//! (`kmatrix run --plan --shard i/N`), the plan itself in a ConfigMap and
//! the parts on a shared volume for `kmatrix merge`. The pod failure policy
//! reads kmatrix's exit codes: a kernel failure (1) is the shard's final
//! answer and is not retried; infrastructure (2, or a crash) is retried up
//! to `backoffLimitPerIndex`; a node drained under the pod does not count.

use serde_json::json;

use crate::plan::Plan;

pub struct Options {
    pub image: String,
    pub shards: usize,
    pub parallelism: usize,
    pub retries: u32,
    /// The project directory inside the image.
    pub project: String,
    /// PersistentVolumeClaim for the parts (ReadWriteMany when pods spread).
    pub results_claim: String,
    /// PersistentVolumeClaim for the build cache; None: a per-pod emptyDir.
    pub cache_claim: Option<String>,
    pub cpus: u32,
}

/// The ConfigMap and the Job, as two YAML documents.
pub fn manifest(plan: &Plan, plan_json: &str, o: &Options) -> String {
    let name = format!("kmatrix-{}", plan.id);
    let n = o.shards;
    let script = format!(
        "i=$((JOB_COMPLETION_INDEX + 1))\nexec kmatrix -C {} --cache-dir /cache run --plan /plan/plan.json --shard \"$i/{n}\" --results-dir \"/results/{}/shard-$i\" -j {}\n",
        super::sh_quote(&o.project),
        plan.id,
        o.cpus
    );
    let cache_volume = match &o.cache_claim {
        Some(c) => json!({"name": "cache", "persistentVolumeClaim": {"claimName": c}}),
        None => json!({"name": "cache", "emptyDir": {}}),
    };
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{name}-plan"), "labels": {"app.kubernetes.io/name": "kmatrix"}},
        "data": {"plan.json": plan_json},
    });
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "kmatrix"}, "annotations": {"kmatrix/plan": plan.id, "kmatrix/merge": format!("kmatrix merge /results/{}/shard-* --into /results/{}/merged", plan.id, plan.id)}},
        "spec": {
            "completionMode": "Indexed",
            "completions": n,
            "parallelism": o.parallelism.min(n).max(1),
            "backoffLimitPerIndex": o.retries,
            // Every shard runs even when some fail: the report needs them all.
            "maxFailedIndexes": n,
            "podFailurePolicy": {"rules": [
                {"action": "FailIndex", "onExitCodes": {"containerName": "kmatrix", "operator": "In", "values": [1]}},
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
                {"action": "Count", "onExitCodes": {"containerName": "kmatrix", "operator": "NotIn", "values": [0, 1]}},
            ]},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "kmatrix"}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "kmatrix",
                        "image": o.image,
                        "command": ["sh", "-c", script],
                        "resources": {"requests": {"cpu": o.cpus.to_string(), "memory": "4Gi"}},
                        "volumeMounts": [
                            {"name": "plan", "mountPath": "/plan", "readOnly": true},
                            {"name": "results", "mountPath": "/results"},
                            {"name": "cache", "mountPath": "/cache"},
                        ],
                    }],
                    "volumes": [
                        {"name": "plan", "configMap": {"name": format!("{name}-plan")}},
                        {"name": "results", "persistentVolumeClaim": {"claimName": o.results_claim}},
                        cache_volume,
                    ],
                },
            },
        },
    });
    format!("{}---\n{}", super::yaml(&config_map), super::yaml(&job))
}

