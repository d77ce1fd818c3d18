//! JSON pointers (RFC 6901) compiled into a tree of path segments.
//!
//! Every pointer the decoder needs (fields, key, time) is inserted into one `PathTree` when the
//! [`Decoder`](super::Decoder) is built, so decoding a payload walks the document once and
//! descends only into members that lie on a configured path.

pub use crate::pointer::parse_pointer;

/// What a pointer in the tree leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The value of field `i` (in the pipeline's field order).
    Field(usize),
    /// The key of the reading.
    Key,
    /// The event time of the reading.
    Time,
}

/// One reference token of a pointer, unescaped.
#[derive(Debug)]
pub(crate) struct Segment {
    /// The member name it matches in an object.
    pub name: Box<str>,
    /// The element it matches in an array, when the token is an array index
    /// (`0` or a decimal number without leading zeros).
    pub index: Option<usize>,
}

/// A node of the tree: the values that end here and the segments that continue from here.
#[derive(Debug, Default)]
pub(crate) struct Node {
    /// Child segments and the index of the node each leads to.
    pub children: Vec<(Segment, usize)>,
    /// The targets whose pointer ends at this node.
    pub targets: Vec<Target>,
}

/// The compiled pointers of one decoder; `nodes[ROOT]` is the whole document.
#[derive(Debug)]
pub(crate) struct PathTree {
    pub nodes: Vec<Node>,
}

/// Index of the root node (the pointer `""`).
pub(crate) const ROOT: usize = 0;

impl PathTree {
    /// An empty tree: only the root, with no targets.
    pub fn new() -> Self {
        Self {
            nodes: vec![Node::default()],
        }
    }

    /// Adds `pointer` leading to `target`. Returns `false` and adds nothing when `pointer` is
    /// not a valid JSON pointer (the decoder then reports the target as missing).
    pub fn insert(&mut self, pointer: &str, target: Target) -> bool {
        let Ok(tokens) = parse_pointer(pointer) else {
            return false;
        };
        let mut node = ROOT;
        for token in tokens {
            let existing = self.nodes[node]
                .children
                .iter()
                .find(|(segment, _)| *segment.name == *token)
                .map(|&(_, child)| child);
            node = match existing {
                Some(child) => child,
                None => {
                    let child = self.nodes.len();
                    self.nodes.push(Node::default());
                    let index = array_index(&token);
                    self.nodes[node].children.push((
                        Segment {
                            name: token.into_boxed_str(),
                            index,
                        },
                        child,
                    ));
                    child
                }
            };
        }
        self.nodes[node].targets.push(target);
        true
    }
}

/// The array index a token denotes: `0`, or digits without a leading zero (RFC 6901 §4).
fn array_index(token: &str) -> Option<usize> {
    let digits_only = !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit());
    if !digits_only || (token.len() > 1 && token.starts_with('0')) {
        return None;
    }
    token.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_index_follows_rfc_6901() {
        assert_eq!(array_index("0"), Some(0));
        assert_eq!(array_index("12"), Some(12));
        assert_eq!(array_index("01"), None);
        assert_eq!(array_index("-"), None);
        assert_eq!(array_index(""), None);
        assert_eq!(array_index("1a"), None);
    }

    #[test]
    fn shared_prefixes_share_nodes() {
        let mut tree = PathTree::new();
        assert!(tree.insert("/a/b", Target::Field(0)));
        assert!(tree.insert("/a/c", Target::Field(1)));
        assert!(tree.insert("/a/b", Target::Time));
        assert!(!tree.insert("x", Target::Key));
        // root, a, b, c
        assert_eq!(tree.nodes.len(), 4);
        assert_eq!(tree.nodes[ROOT].children.len(), 1);
        let b = tree.nodes[1].children[0].1;
        assert_eq!(tree.nodes[b].targets, vec![Target::Field(0), Target::Time]);
    }
}
