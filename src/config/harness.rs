//! The format of the harness `runner` replaces (`test_layers.yaml`, `categories.yaml`),
//! as far as it is a matter of shape, rewritten on the located tree before
//! deserialization so that every diagnostic still points into the file as written:
//!
//! - `layers:` as a mapping keyed by layer id becomes today's list: each entry gets
//!   `name: <id>` (located at the key) and its own `name:` (a display name) becomes
//!   `display_name:`;
//! - a layer's category objects (`- name: unit` with fields) are laid over the
//!   `categories:` entry of the same name when there is one (mappings merge key by
//!   key, everything else replaces), so the object is the category as that layer runs it.
//!
//! What the old fields *mean* is mapped in validation (`validate/harness.rs`), which
//! records every mapping for `--show-layers`.

use super::node::{Node, Value};

/// Rewrites `layers:` written as a mapping keyed by layer id into the list form.
/// Returns true when it did (the file uses the old format).
pub(crate) fn normalize_layers(tree: &mut Node) -> bool {
    let Value::Map(top) = &mut tree.value else {
        return false;
    };
    let Some((_, layers)) = top.iter_mut().find(|(k, _)| k.as_str() == Some("layers")) else {
        return false;
    };
    let Value::Map(entries) = &mut layers.value else {
        return false;
    };
    let items = std::mem::take(entries)
        .into_iter()
        .map(|(key, mut value)| {
            let id = Node::str(key.as_str().unwrap_or_default(), key.loc);
            let name_key = Node::str("name", key.loc);
            match &mut value.value {
                Value::Map(fields) => {
                    for (k, _) in fields.iter_mut() {
                        if k.as_str() == Some("name") {
                            *k = Node::str("display_name", k.loc);
                        }
                    }
                    fields.insert(0, (name_key, id));
                }
                Value::Null => {
                    value.value = Value::Map(vec![(name_key, id)]);
                }
                _ => {}
            }
            value
        })
        .collect();
    layers.value = Value::Seq(items);
    true
}

/// Lays every category object of every layer of `tree` over the `categories:` entry
/// of the same name.
pub(crate) fn expand_category_objects(tree: &mut Node) {
    let categories = tree.get("categories").cloned();
    let Value::Map(top) = &mut tree.value else {
        return;
    };
    let Some((_, layers)) = top.iter_mut().find(|(k, _)| k.as_str() == Some("layers")) else {
        return;
    };
    if let Value::Seq(items) = &mut layers.value {
        for layer in items {
            expand_in_layer(layer, categories.as_ref());
        }
    }
}

/// [`expand_category_objects`] for one layer (also used for the layers other
/// environments' overrides would produce).
pub(crate) fn expand_in_layer(layer: &mut Node, categories: Option<&Node>) {
    let Value::Map(fields) = &mut layer.value else {
        return;
    };
    let Some((_, list)) = fields
        .iter_mut()
        .find(|(k, _)| k.as_str() == Some("categories"))
    else {
        return;
    };
    let Value::Seq(items) = &mut list.value else {
        return;
    };
    for item in items {
        if !matches!(item.value, Value::Map(_)) {
            continue;
        }
        let Some(base) = item
            .name()
            .and_then(|n| categories.and_then(|c| c.get(n)))
            .filter(|b| matches!(b.value, Value::Map(_)))
        else {
            continue;
        };
        let mut merged = base.clone();
        if let Value::Map(entries) = &mut merged.value {
            entries.retain(|(k, _)| k.as_str() != Some("environment_overrides"));
        }
        let loc = item.loc;
        merge_replacing_lists(&mut merged, std::mem::replace(item, Node::str("", loc)));
        merged.loc = loc;
        *item = merged;
    }
}

/// Deep merge where mappings merge key by key and everything else, lists included,
/// replaces (the rule of `environment_overrides` and of category objects).
pub(crate) fn merge_replacing_lists(base: &mut Node, over: Node) {
    let Node { loc, value } = over;
    match (&mut base.value, value) {
        (Value::Map(base_entries), Value::Map(over_entries)) => {
            for (key, value) in over_entries {
                match base_entries
                    .iter_mut()
                    .find(|(k, _)| k.as_str() == key.as_str())
                {
                    Some((_, slot)) => merge_replacing_lists(slot, value),
                    None => base_entries.push((key, value)),
                }
            }
        }
        (_, value) => *base = Node { loc, value },
    }
}

/// The environment names used as keys of any `environment_overrides` (of layers, in
/// either form, and of categories).
pub(crate) fn override_environments(tree: &Node) -> Vec<String> {
    let mut out = Vec::new();
    let mut collect = |entry: &Node| {
        if let Some(Value::Map(envs)) = entry.get("environment_overrides").map(|n| &n.value) {
            for (k, _) in envs {
                if let Some(k) = k.as_str()
                    && !out.iter().any(|o| o == k)
                {
                    out.push(k.to_string());
                }
            }
        }
    };
    for section in ["layers", "categories"] {
        match tree.get(section).map(|n| &n.value) {
            Some(Value::Seq(items)) => items.iter().for_each(&mut collect),
            Some(Value::Map(entries)) => entries.iter().for_each(|(_, v)| collect(v)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::node::{Sources, parse};
    use super::*;
    use std::path::Path;

    fn tree(text: &str) -> Node {
        parse(&mut Sources::default(), Path::new("t.yaml"), text.into()).unwrap()
    }

    #[test]
    fn mapping_form_becomes_a_list_with_ids_and_display_names() {
        let mut t = tree("layers:\n  fast:\n    name: Fast Feedback\n    priority: 1\n  slow:\n");
        assert!(normalize_layers(&mut t));
        let Value::Seq(items) = &t.get("layers").unwrap().value else {
            panic!()
        };
        assert_eq!(items[0].name(), Some("fast"));
        assert_eq!(
            items[0].get("display_name").unwrap().as_str(),
            Some("Fast Feedback")
        );
        assert_eq!(items[0].get("name").unwrap().loc.line, 2);
        assert_eq!(items[1].name(), Some("slow"));
        let mut list = tree("layers:\n  - name: a\n");
        assert!(!normalize_layers(&mut list));
    }

    #[test]
    fn category_objects_lay_over_the_top_level_entry() {
        let mut t = tree(
            "categories:\n  unit:\n    command: pytest\n    tags: [a, b]\n    env: {A: '1'}\nlayers:\n  - name: l\n    categories:\n      - name: unit\n        tags: [c]\n        env: {B: '2'}\n      - other\n",
        );
        expand_category_objects(&mut t);
        let Value::Seq(layers) = &t.get("layers").unwrap().value else {
            panic!()
        };
        let Value::Seq(cats) = &layers[0].get("categories").unwrap().value else {
            panic!()
        };
        let unit = &cats[0];
        assert_eq!(unit.get("command").unwrap().as_str(), Some("pytest"));
        let Value::Seq(tags) = &unit.get("tags").unwrap().value else {
            panic!()
        };
        assert_eq!(tags.len(), 1, "lists replace");
        let env = unit.get("env").unwrap();
        assert!(
            env.get("A").is_some() && env.get("B").is_some(),
            "maps merge"
        );
        assert_eq!(cats[1].as_str(), Some("other"));
    }

    #[test]
    fn override_environments_are_collected_from_both_forms() {
        let t = tree(
            "layers:\n  a:\n    environment_overrides: {staging: {}, qa: {}}\ncategories:\n  u:\n    environment_overrides: {perf: {}}\n",
        );
        assert_eq!(override_environments(&t), ["staging", "qa", "perf"]);
    }
}
