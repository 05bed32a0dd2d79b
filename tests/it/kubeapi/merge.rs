//! Server-side apply and the three other patch types, as the real API server applies them to
//! the types `wms deploy` writes.
//!
//! Field ownership follows structured-merge-diff: every manager owns a set of field paths
//! (`metadata.managedFields[].fieldsV1`, `f:`/`k:`/`v:` path elements, `.` for a list item
//! itself); an apply conflicts where another manager owns a leaf whose live value differs from
//! the applied one; `force` moves those leaves to the applier; fields the applier owned before
//! and no longer applies are removed unless someone else owns them; an Update (create, PUT, the
//! other patches) takes ownership of the leaves it changed. The schema knowledge is a table of
//! the associative lists and atomic structs of the built-in types (not the OpenAPI schema).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value, json};

/// A path into an object in FieldsV1 elements: `f:spec`, `k:{"name":"serve"}`, `v:"x"`.
pub type Path = Vec<String>;

#[derive(Debug, Clone, Copy)]
enum ListKind {
    Atomic,
    Keyed(&'static [&'static str]),
    Set,
}

const CONTAINERS: &[&str] = &["containers", "initContainers", "ephemeralContainers"];

/// Which lists are associative (and by which keys) or sets; everything else is atomic.
fn list_kind(names: &[String]) -> ListKind {
    let last = names.last().map(String::as_str).unwrap_or("");
    let parent = if names.len() >= 2 {
        names[names.len() - 2].as_str()
    } else {
        ""
    };
    match last {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => ListKind::Keyed(&["name"]),
        "volumeMounts" => ListKind::Keyed(&["mountPath"]),
        "volumeDevices" => ListKind::Keyed(&["devicePath"]),
        "ports" if CONTAINERS.contains(&parent) => ListKind::Keyed(&["containerPort", "protocol"]),
        "ports" if names.len() == 2 && parent == "spec" => ListKind::Keyed(&["port", "protocol"]),
        "conditions" => ListKind::Keyed(&["type"]),
        "ownerReferences" => ListKind::Keyed(&["uid"]),
        "hostAliases" => ListKind::Keyed(&["ip"]),
        "topologySpreadConstraints" => ListKind::Keyed(&["topologyKey", "whenUnsatisfiable"]),
        "finalizers" => ListKind::Set,
        _ => ListKind::Atomic,
    }
}

/// Label selectors are `+structType=atomic`, Service selectors `+mapType=atomic`.
fn atomic_map(names: &[String]) -> bool {
    matches!(
        names.last().map(String::as_str),
        Some("selector" | "podSelector" | "namespaceSelector")
    )
}

/// The key of an associative list item as the `k:` JSON (sorted keys; `protocol` defaults to TCP).
fn item_key(item: &Value, keys: &[&str]) -> Option<Map<String, Value>> {
    let mut m = Map::new();
    for k in keys {
        match item.get(*k) {
            Some(v) if !v.is_null() => {
                m.insert((*k).to_string(), v.clone());
            }
            _ if *k == "protocol" => {
                m.insert((*k).to_string(), json!("TCP"));
            }
            _ => return None,
        }
    }
    Some(m)
}

fn key_elem(key: &Map<String, Value>) -> String {
    format!("k:{}", Value::Object(key.clone()))
}

/// The set of leaf and list-item paths an object sets. `status` is left out where it is a
/// subresource; `strict` refuses list items without their key (an apply body), else they are
/// skipped (objects stored by other writes).
pub fn fieldset(obj: &Value, status_sub: bool, strict: bool) -> Result<BTreeSet<Path>, String> {
    let mut out = BTreeSet::new();
    let Some(root) = obj.as_object() else {
        return Ok(out);
    };
    for (k, v) in root {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if status_sub => {}
            "metadata" => {
                if let Some(m) = v.as_object() {
                    for mk in ["labels", "annotations", "finalizers", "ownerReferences"] {
                        if let Some(mv) = m.get(mk).filter(|v| !v.is_null()) {
                            let mut names = vec!["metadata".to_string(), mk.to_string()];
                            let mut prefix = vec!["f:metadata".to_string(), format!("f:{mk}")];
                            visit(mv, &mut names, &mut prefix, &mut out, strict)?;
                        }
                    }
                }
            }
            _ if v.is_null() => {}
            _ => {
                let mut names = vec![k.clone()];
                let mut prefix = vec![format!("f:{k}")];
                visit(v, &mut names, &mut prefix, &mut out, strict)?;
            }
        }
    }
    Ok(out)
}

/// [`visit`] each non-null field of an object, as `f:<name>` below `prefix`.
fn visit_fields(
    m: &serde_json::Map<String, Value>,
    names: &mut Vec<String>,
    prefix: &mut Path,
    out: &mut BTreeSet<Path>,
    strict: bool,
) -> Result<(), String> {
    for (k, child) in m {
        if child.is_null() {
            continue;
        }
        names.push(k.clone());
        prefix.push(format!("f:{k}"));
        visit(child, names, prefix, out, strict)?;
        prefix.pop();
        names.pop();
    }
    Ok(())
}

fn visit(
    v: &Value,
    names: &mut Vec<String>,
    prefix: &mut Path,
    out: &mut BTreeSet<Path>,
    strict: bool,
) -> Result<(), String> {
    match v {
        Value::Object(m) if !m.is_empty() && !atomic_map(names) => {
            visit_fields(m, names, prefix, out, strict)?;
        }
        Value::Array(items) => match list_kind(names) {
            ListKind::Keyed(keys) => {
                let mut seen = BTreeSet::new();
                for item in items {
                    let Some(key) = item_key(item, keys) else {
                        if strict {
                            return Err(format!(
                                "{}: Invalid value: associative list with keys has an element that omits key field \"{}\"",
                                path_string(prefix),
                                keys[0]
                            ));
                        }
                        continue;
                    };
                    let elem = key_elem(&key);
                    if !seen.insert(elem.clone()) && strict {
                        return Err(format!(
                            "{}: duplicate entries for key {}",
                            path_string(prefix),
                            elem_string(&elem)
                        ));
                    }
                    prefix.push(elem);
                    out.insert(prefix.clone());
                    if let Some(m) = item.as_object() {
                        visit_fields(m, names, prefix, out, strict)?;
                    }
                    prefix.pop();
                }
            }
            ListKind::Set => {
                for item in items {
                    prefix.push(format!("v:{item}"));
                    out.insert(prefix.clone());
                    prefix.pop();
                }
            }
            ListKind::Atomic => {
                out.insert(prefix.clone());
            }
        },
        _ => {
            out.insert(prefix.clone());
        }
    }
    Ok(())
}

/// `.spec.template.spec.containers[name="serve"].image`, as structured-merge-diff prints paths.
pub fn path_string(path: &[String]) -> String {
    path.iter().map(|e| elem_string(e)).collect()
}

fn elem_string(e: &str) -> String {
    if let Some(f) = e.strip_prefix("f:") {
        format!(".{f}")
    } else if let Some(k) = e.strip_prefix("k:") {
        let m: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
        let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("[{}]", parts.join(","))
    } else if let Some(v) = e.strip_prefix("v:") {
        format!("[={v}]")
    } else {
        e.to_string()
    }
}

/// The value at a FieldsV1 path, if the object has it.
pub fn value_at<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    let mut names: Vec<String> = Vec::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            cur = cur.get(f)?;
            names.push(f.to_string());
        } else if let Some(k) = e.strip_prefix("k:") {
            let want: Map<String, Value> = serde_json::from_str(k).ok()?;
            let ListKind::Keyed(keys) = list_kind(&names) else {
                return None;
            };
            cur = cur
                .as_array()?
                .iter()
                .find(|i| item_key(i, keys).as_ref() == Some(&want))?;
        } else if let Some(v) = e.strip_prefix("v:") {
            let want: Value = serde_json::from_str(v).ok()?;
            cur = cur.as_array()?.iter().find(|i| **i == want)?;
        } else {
            return None;
        }
    }
    Some(cur)
}

/// Remove the field or list item at `path`, and maps left empty on the way.
pub fn remove_at(obj: &mut Value, path: &[String]) {
    fn go(cur: &mut Value, path: &[String], names: &mut Vec<String>) {
        let Some((e, rest)) = path.split_first() else {
            return;
        };
        if let Some(f) = e.strip_prefix("f:") {
            let Some(m) = cur.as_object_mut() else { return };
            if rest.is_empty() {
                m.remove(f);
                return;
            }
            if let Some(child) = m.get_mut(f) {
                names.push(f.to_string());
                go(child, rest, names);
                names.pop();
                if child.as_object().is_some_and(|c| c.is_empty()) {
                    m.remove(f);
                }
            }
        } else if let Some(k) = e.strip_prefix("k:") {
            let Ok(want) = serde_json::from_str::<Map<String, Value>>(k) else {
                return;
            };
            let ListKind::Keyed(keys) = list_kind(names) else {
                return;
            };
            let Some(items) = cur.as_array_mut() else {
                return;
            };
            let Some(pos) = items
                .iter()
                .position(|i| item_key(i, keys).as_ref() == Some(&want))
            else {
                return;
            };
            if rest.is_empty() {
                items.remove(pos);
            } else {
                go(&mut items[pos], rest, names);
            }
        } else if let Some(v) = e.strip_prefix("v:") {
            let Ok(want) = serde_json::from_str::<Value>(v) else {
                return;
            };
            if let Some(items) = cur.as_array_mut() {
                items.retain(|i| *i != want);
            }
        }
    }
    go(obj, path, &mut Vec::new());
}

/// Merge an applied configuration into the live object: maps merge, associative lists merge
/// by key, sets take the union, everything else is replaced.
pub fn merge_applied(live: &mut Value, applied: &Value) {
    merge_map(live, applied, &mut Vec::new());
}

fn merge_map(live: &mut Value, applied: &Value, names: &mut Vec<String>) {
    let Some(am) = applied.as_object() else {
        return;
    };
    let lm = object_mut(live);
    for (k, av) in am {
        if av.is_null() {
            continue;
        }
        names.push(k.clone());
        match lm.get_mut(k) {
            Some(lv) => merge_field(lv, av, names),
            None => {
                lm.insert(k.clone(), av.clone());
            }
        }
        names.pop();
    }
}

fn merge_field(lv: &mut Value, av: &Value, names: &mut Vec<String>) {
    match (lv.is_object(), av) {
        (true, Value::Object(_)) if !atomic_map(names) => merge_map(lv, av, names),
        _ => match (lv.as_array_mut(), av.as_array(), list_kind(names)) {
            (Some(litems), Some(aitems), ListKind::Keyed(keys)) => {
                let mut out = Vec::new();
                let mut used = vec![false; litems.len()];
                for ai in aitems {
                    let key = item_key(ai, keys);
                    let pos = litems
                        .iter()
                        .position(|li| key.is_some() && item_key(li, keys) == key);
                    match pos {
                        Some(p) => {
                            used[p] = true;
                            let mut merged = litems[p].clone();
                            merge_map(&mut merged, ai, names);
                            out.push(merged);
                        }
                        None => out.push(ai.clone()),
                    }
                }
                for (i, li) in litems.iter().enumerate() {
                    if !used[i] {
                        out.push(li.clone());
                    }
                }
                *lv = Value::Array(out);
            }
            (Some(litems), Some(aitems), ListKind::Set) => {
                for a in aitems {
                    if !litems.contains(a) {
                        litems.push(a.clone());
                    }
                }
            }
            _ => *lv = av.clone(),
        },
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Manager {
    pub manager: String,
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub fields: BTreeSet<Path>,
}

impl Manager {
    /// How the real server names a manager in a conflict message.
    fn printed(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s = format!("{s} with subresource {sub:?}");
        }
        if self.operation == "Update" {
            s = format!("{s} using {}", self.api_version);
        }
        s
    }
}

fn tree_to_set(tree: &Value, prefix: &mut Path, out: &mut BTreeSet<Path>) {
    let Some(m) = tree.as_object() else { return };
    for (k, v) in m {
        if k == "." {
            out.insert(prefix.clone());
            continue;
        }
        prefix.push(k.clone());
        if v.as_object().is_none_or(|c| c.is_empty()) {
            out.insert(prefix.clone());
        } else {
            tree_to_set(v, prefix, out);
        }
        prefix.pop();
    }
}

fn set_to_tree(set: &BTreeSet<Path>) -> Value {
    #[derive(Default)]
    struct Node {
        member: bool,
        children: BTreeMap<String, Node>,
    }
    let mut root = Node::default();
    for p in set {
        let mut n = &mut root;
        for e in p {
            n = n.children.entry(e.clone()).or_default();
        }
        n.member = true;
    }
    fn ser(n: &Node) -> Value {
        let mut m = Map::new();
        if n.member && !n.children.is_empty() {
            m.insert(".".into(), json!({}));
        }
        for (k, c) in &n.children {
            m.insert(k.clone(), ser(c));
        }
        Value::Object(m)
    }
    ser(&root)
}

pub fn read_managers(obj: &Value) -> Vec<Manager> {
    let mut out = Vec::new();
    for e in obj["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let mut fields = BTreeSet::new();
        tree_to_set(&e["fieldsV1"], &mut Vec::new(), &mut fields);
        out.push(Manager {
            manager: e["manager"].as_str().unwrap_or("").to_string(),
            operation: e["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: e["apiVersion"].as_str().unwrap_or("").to_string(),
            time: e["time"].as_str().unwrap_or("").to_string(),
            subresource: e["subresource"].as_str().map(str::to_string),
            fields,
        });
    }
    out
}

pub fn write_managers(obj: &mut Value, managers: &[Manager]) {
    let entries: Vec<Value> = managers
        .iter()
        .filter(|m| !m.fields.is_empty())
        .map(|m| {
            let mut e = json!({
                "manager": m.manager, "operation": m.operation, "apiVersion": m.api_version,
                "time": m.time, "fieldsType": "FieldsV1", "fieldsV1": set_to_tree(&m.fields),
            });
            if let Some(s) = &m.subresource {
                e["subresource"] = json!(s);
            }
            e
        })
        .collect();
    let meta = super::store::mutable_metadata(obj);
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), Value::Array(entries));
    }
}

/// The outcome of a server-side apply.
pub enum Applied {
    Ok(Value),
    /// 409: the message and the `causes` as the real server writes them.
    Conflict(String, Vec<Value>),
}

/// Server-side apply of `applied` (already stripped of server-owned metadata) onto `live`
/// (`None`: the apply creates the object).
pub fn apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    status_sub: bool,
    now: &str,
) -> Result<Applied, String> {
    let applied_set = fieldset(applied, status_sub, true)?;
    let base = live.cloned().unwrap_or_else(|| json!({}));
    let mut managers = live.map(read_managers).unwrap_or_default();
    let is_me =
        |m: &Manager| m.manager == manager && m.operation == "Apply" && m.subresource.is_none();

    let mut conflicts: Vec<(usize, Path)> = Vec::new();
    for (i, m) in managers.iter().enumerate() {
        if is_me(m) || m.subresource.is_some() {
            continue;
        }
        for p in m.fields.intersection(&applied_set) {
            let item = p
                .last()
                .is_some_and(|e| e.starts_with("k:") || e.starts_with("v:"));
            if item {
                continue;
            }
            if value_at(&base, p) != value_at(applied, p) {
                conflicts.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Ok(conflict_error(&managers, &conflicts));
    }
    for (i, p) in &conflicts {
        managers[*i].fields.remove(p);
    }

    let mine_before: BTreeSet<Path> = managers
        .iter()
        .filter(|m| is_me(m))
        .flat_map(|m| m.fields.clone())
        .collect();
    let others: BTreeSet<Path> = managers
        .iter()
        .filter(|m| !is_me(m))
        .flat_map(|m| m.fields.clone())
        .collect();
    let mut new = base.clone();
    let mut removals: Vec<&Path> = mine_before
        .difference(&applied_set)
        .filter(|p| !others.contains(*p))
        .collect();
    // A list item stays while another manager owns something inside it.
    removals.retain(|p| {
        !others.iter().any(|o| o.len() > p.len() && o.starts_with(p))
            && !applied_set
                .iter()
                .any(|a| a.len() > p.len() && a.starts_with(p))
    });
    removals.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in removals {
        remove_at(&mut new, p);
    }
    merge_applied(&mut new, applied);

    managers.retain(|m| !is_me(m));
    managers.insert(
        0,
        Manager {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: None,
            fields: applied_set,
        },
    );
    managers.retain(|m| !m.fields.is_empty());
    write_managers(&mut new, &managers);
    Ok(Applied::Ok(new))
}

fn conflict_error(managers: &[Manager], conflicts: &[(usize, Path)]) -> Applied {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(i, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", managers[*i].printed()), "field": path_string(p)})
        })
        .collect();
    let message = if conflicts.len() == 1 {
        let (i, p) = &conflicts[0];
        format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            managers[*i].printed(),
            path_string(p)
        )
    } else {
        let mut by: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (i, p) in conflicts {
            by.entry(managers[*i].printed())
                .or_default()
                .push(path_string(p));
        }
        let mut lines = Vec::new();
        for (m, paths) in by {
            lines.push(format!("conflicts with {m}:"));
            lines.extend(paths.into_iter().map(|p| format!("- {p}")));
        }
        format!(
            "Apply failed with {} conflicts: {}",
            conflicts.len(),
            lines.join("\n")
        )
    };
    Applied::Conflict(message, causes)
}

/// Ownership after an Update (create, PUT, merge/strategic/JSON patch) by `manager`: it takes
/// the leaves it changed; removed fields leave every manager.
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    status_sub: bool,
    subresource: Option<&str>,
    now: &str,
) {
    let empty = json!({});
    let old_v = old.unwrap_or(&empty);
    let mut managers = old.map(read_managers).unwrap_or_default();
    let (new_set, old_set) = if subresource == Some("status") {
        let only_status =
            |v: &Value| json!({"status": v.get("status").cloned().unwrap_or(Value::Null)});
        (
            fieldset(&only_status(new), false, false).unwrap_or_default(),
            fieldset(&only_status(old_v), false, false).unwrap_or_default(),
        )
    } else {
        (
            fieldset(new, status_sub, false).unwrap_or_default(),
            fieldset(old_v, status_sub, false).unwrap_or_default(),
        )
    };
    let changed: BTreeSet<Path> = new_set
        .iter()
        .filter(|p| !old_set.contains(*p) || value_at(old_v, p) != value_at(new, p))
        .cloned()
        .collect();
    let removed: BTreeSet<Path> = old_set.difference(&new_set).cloned().collect();
    let is_me = |m: &Manager| {
        m.manager == manager && m.operation == "Update" && m.subresource.as_deref() == subresource
    };
    for m in managers.iter_mut() {
        m.fields.retain(|p| !removed.contains(p));
        if !is_me(m) {
            m.fields.retain(|p| !changed.contains(p));
        }
    }
    if !changed.is_empty() {
        match managers.iter_mut().find(|m| is_me(m)) {
            Some(m) => {
                m.fields.extend(changed);
                m.time = now.to_string();
                m.api_version = api_version.to_string();
            }
            None => managers.push(Manager {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: subresource.map(str::to_string),
                fields: changed,
            }),
        }
    }
    managers.retain(|m| !m.fields.is_empty());
    write_managers(new, &managers);
}

/// `v`'s fields, after replacing `v` with `{}` when it is not an object.
fn object_mut(v: &mut Value) -> &mut serde_json::Map<String, Value> {
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("object")
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    let tm = object_mut(target);
    for (k, pv) in pm {
        if pv.is_null() {
            tm.remove(k);
        } else {
            merge_patch(tm.entry(k.clone()).or_insert(Value::Null), pv);
        }
    }
}

/// The patch merge key of a list under strategic merge patch (the built-in types' tags).
fn smp_key(names: &[String]) -> Option<&'static str> {
    match list_kind(names) {
        ListKind::Keyed(keys) => Some(keys[0]),
        _ => None,
    }
}

fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(strip_directives).collect()),
        other => other.clone(),
    }
}

/// Strategic merge patch, the subset the built-in types need: maps merge, `null` deletes,
/// lists with a patch merge key merge by it (`$patch: delete` removes an item), `finalizers`
/// take the union, `$patch: replace` replaces a map, `$deleteFromPrimitiveList/…` removes
/// values, `$setElementOrder/…` and `$retainKeys` are accepted and ignored, other lists replace.
pub fn strategic_patch(target: &mut Value, patch: &Value) {
    smp(target, patch, &mut Vec::new());
}

fn smp(target: &mut Value, patch: &Value, names: &mut Vec<String>) {
    let Some(pm) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if pm.get("$patch").and_then(Value::as_str) == Some("replace") {
        *target = strip_directives(patch);
        return;
    }
    let tm = object_mut(target);
    for (k, pv) in pm {
        if k.starts_with("$setElementOrder/") || k == "$retainKeys" || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(list), Some(del)) = (
                tm.get_mut(field).and_then(Value::as_array_mut),
                pv.as_array(),
            ) {
                list.retain(|v| !del.contains(v));
            }
            continue;
        }
        if pv.is_null() {
            tm.remove(k);
            continue;
        }
        names.push(k.clone());
        match tm.get_mut(k) {
            Some(tv) if tv.is_object() && pv.is_object() => smp(tv, pv, names),
            Some(Value::Array(titems)) if pv.is_array() => {
                let pitems = pv.as_array().expect("array");
                if let Some(key) = smp_key(names) {
                    for pi in pitems {
                        let kv = pi.get(key);
                        let pos = titems
                            .iter()
                            .position(|ti| kv.is_some() && ti.get(key) == kv);
                        let delete = pi.get("$patch").and_then(Value::as_str) == Some("delete");
                        match (pos, delete) {
                            (Some(p), true) => {
                                titems.remove(p);
                            }
                            (None, true) => {}
                            (Some(p), false) => smp(&mut titems[p], pi, names),
                            (None, false) => titems.push(strip_directives(pi)),
                        }
                    }
                } else if k == "finalizers" {
                    for pi in pitems {
                        if !titems.contains(pi) {
                            titems.push(pi.clone());
                        }
                    }
                } else {
                    *titems = pitems.iter().map(strip_directives).collect();
                }
            }
            _ => {
                tm.insert(k.clone(), strip_directives(pv));
            }
        }
        names.pop();
    }
}

fn pointer_parts(p: &str) -> Result<Vec<String>, String> {
    if p.is_empty() {
        return Ok(Vec::new());
    }
    let rest = p
        .strip_prefix('/')
        .ok_or_else(|| format!("invalid JSON pointer {p:?}"))?;
    Ok(rest
        .split('/')
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn parent_mut<'a>(doc: &'a mut Value, parts: &[String]) -> Result<&'a mut Value, String> {
    let mut cur = doc;
    for p in parts {
        cur = match cur {
            Value::Object(m) => m.get_mut(p).ok_or_else(|| format!("missing path {p:?}"))?,
            Value::Array(a) => {
                let i: usize = p.parse().map_err(|_| format!("invalid index {p:?}"))?;
                a.get_mut(i)
                    .ok_or_else(|| format!("index {i} out of range"))?
            }
            _ => return Err(format!("cannot descend into {p:?}")),
        };
    }
    Ok(cur)
}

fn json_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let parts = pointer_parts(path)?;
    let Some((last, parent)) = parts.split_last() else {
        *doc = value;
        return Ok(());
    };
    match parent_mut(doc, parent)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(value);
            } else {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("invalid index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("index {i} out of range"));
                }
                a.insert(i, value);
            }
        }
        _ => return Err(format!("cannot add at {path:?}")),
    }
    Ok(())
}

fn json_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let parts = pointer_parts(path)?;
    let (last, parent) = parts.split_last().ok_or("cannot remove the root")?;
    match parent_mut(doc, parent)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("missing path {path:?}")),
        Value::Array(a) => {
            let i: usize = last
                .parse()
                .map_err(|_| format!("invalid index {last:?}"))?;
            if i >= a.len() {
                return Err(format!("index {i} out of range"));
            }
            Ok(a.remove(i))
        }
        _ => Err(format!("cannot remove {path:?}")),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops
        .as_array()
        .ok_or("a JSON patch is a list of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without path")?;
        match op["op"].as_str().unwrap_or("") {
            "add" => json_add(
                doc,
                path,
                op.get("value").cloned().ok_or("add without value")?,
            )?,
            "remove" => {
                json_remove(doc, path)?;
            }
            "replace" => {
                json_remove(doc, path)?;
                json_add(
                    doc,
                    path,
                    op.get("value").cloned().ok_or("replace without value")?,
                )?;
            }
            "move" => {
                let from = op["from"].as_str().ok_or("move without from")?;
                let v = json_remove(doc, from)?;
                json_add(doc, path, v)?;
            }
            "copy" => {
                let from = op["from"].as_str().ok_or("copy without from")?;
                let v = doc
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| format!("missing path {from:?}"))?;
                json_add(doc, path, v)?;
            }
            "test" => {
                if doc.pointer(path) != op.get("value") {
                    return Err(format!("testing value {path} failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}
