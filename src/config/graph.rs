//! Dependency graphs among layers, categories and services: cycle detection with the
//! cycle spelled out (`a -> b -> a`) and located at the edge that closes it.

use std::collections::HashMap;

use super::node::Loc;

/// One node of a dependency graph: its name and its edges (target name, location of
/// the reference). Edges to unknown names and to the node itself are ignored here;
/// they are reported elsewhere.
pub(crate) struct GraphNode<'a> {
    pub name: &'a str,
    pub edges: Vec<(&'a str, Loc)>,
}

/// A dependency cycle: the names along it (first == last) and where it closes.
#[derive(Debug, PartialEq)]
pub(crate) struct Cycle {
    pub path: Vec<String>,
    pub loc: Loc,
}

impl Cycle {
    /// `a -> b -> a`.
    pub fn describe(&self) -> String {
        self.path
            .iter()
            .map(|n| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(" -> ")
    }
}

/// Every cycle found by a depth-first search in declaration order (each back edge
/// reports one cycle).
pub(crate) fn find_cycles(nodes: &[GraphNode<'_>]) -> Vec<Cycle> {
    let index: HashMap<&str, usize> = nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect();
    // 0 = unvisited, 1 = on the stack, 2 = done.
    let mut state = vec![0u8; nodes.len()];
    let mut cycles = Vec::new();
    for start in 0..nodes.len() {
        if state[start] != 0 {
            continue;
        }
        // Iterative DFS: (node, next edge to look at).
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(top) = stack.last_mut() {
            let (node, next) = *top;
            top.1 += 1;
            let edges = &nodes[node].edges;
            if next >= edges.len() {
                state[node] = 2;
                stack.pop();
                continue;
            }
            let (target, loc) = edges[next];
            let Some(&t) = index.get(target) else {
                continue;
            };
            if t == node {
                continue;
            }
            match state[t] {
                0 => {
                    state[t] = 1;
                    stack.push((t, 0));
                }
                1 => {
                    let pos = stack.iter().position(|&(n, _)| n == t).unwrap_or(0);
                    let mut path: Vec<String> = stack[pos..]
                        .iter()
                        .map(|&(n, _)| nodes[n].name.to_string())
                        .collect();
                    path.push(nodes[t].name.to_string());
                    cycles.push(Cycle { path, loc });
                }
                _ => {}
            }
        }
    }
    cycles
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(line: u32) -> Loc {
        Loc {
            line,
            ..Loc::default()
        }
    }

    #[test]
    fn finds_cycles_and_ignores_dags() {
        let nodes = vec![
            GraphNode {
                name: "a",
                edges: vec![("b", loc(1))],
            },
            GraphNode {
                name: "b",
                edges: vec![("c", loc(2)), ("a", loc(3)), ("b", loc(4)), ("zz", loc(5))],
            },
            GraphNode {
                name: "c",
                edges: vec![],
            },
        ];
        let cycles = find_cycles(&nodes);
        assert_eq!(cycles.len(), 1);
        assert_eq!(cycles[0].describe(), "`a` -> `b` -> `a`");
        assert_eq!(cycles[0].loc.line, 3);

        let dag = vec![
            GraphNode {
                name: "a",
                edges: vec![("b", loc(1)), ("c", loc(1))],
            },
            GraphNode {
                name: "b",
                edges: vec![("c", loc(2))],
            },
            GraphNode {
                name: "c",
                edges: vec![],
            },
        ];
        assert!(find_cycles(&dag).is_empty());
    }
}
