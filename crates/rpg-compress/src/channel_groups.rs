//! Which channels must be pruned together, found from a model's ONNX graph
//! (the dependency-graph method of Torch-Pruning): a residual `Add` ties the
//! channels of its two inputs, a depthwise conv ties its outputs to its
//! inputs, and BatchNorm, activations and pooling carry channels through.
//! Each group of tied channels is written by one or more *producers* (convs
//! and fully connected layers, rows along axis 0) and read by *consumers*
//! (the next layers' input axis); pruning a channel slices all of them.
//!
//! Nothing here is listed per model: a group is prunable unless it reaches
//! the graph's input or output or an operator the walk does not know
//! (attention's reshapes, layer norm), where it is left whole.

use std::collections::{BTreeMap, HashMap};

use rpg_onnx::proto::GraphProto;

use crate::artifact::CompressError;

type Result<T> = std::result::Result<T, CompressError>;

/// One tensor that a channel group slices: along `axis`, `per_channel`
/// consecutive entries per channel (the spatial size where a conv's output
/// is flattened into a fully connected layer, else 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// Parameter name.
    pub tensor: String,
    /// The sliced axis.
    pub axis: usize,
    /// Entries per channel along `axis`.
    pub per_channel: usize,
}

/// Channels that are pruned together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelGroup {
    /// How many channels the group has.
    pub channels: usize,
    /// Weights whose axis-0 rows write the channels: a channel's importance
    /// is the L1 norm of its rows in all of them.
    pub producers: Vec<String>,
    /// Every tensor sliced when a channel goes (producers included).
    pub members: Vec<GroupMember>,
    /// Layers (parameter prefixes) whose output channels are the group's:
    /// what a pruned model's configuration records.
    pub layers: Vec<String>,
}

#[derive(Debug, Default)]
struct Building {
    channels: Option<usize>,
    producers: Vec<String>,
    members: Vec<GroupMember>,
    layers: Vec<String>,
    fixed: bool,
}

/// Where a value's channel axis (axis 1) comes from.
#[derive(Debug, Clone, Copy)]
struct Flow {
    group: usize,
    /// Flattened from `[N, C, H, W]` to `[N, C*H*W]`.
    flat: bool,
}

#[derive(Default)]
struct Walk {
    groups: Vec<Building>,
    parent: Vec<usize>,
    flows: HashMap<String, Flow>,
}

impl Walk {
    fn group(&mut self, fixed: bool) -> usize {
        self.groups.push(Building {
            fixed,
            ..Default::default()
        });
        self.parent.push(self.parent.len());
        self.parent.len() - 1
    }

    fn root(&mut self, mut g: usize) -> usize {
        while self.parent[g] != g {
            self.parent[g] = self.parent[self.parent[g]];
            g = self.parent[g];
        }
        g
    }

    fn flow(&mut self, value: &str) -> Option<Flow> {
        let f = *self.flows.get(value)?;
        Some(Flow {
            group: self.root(f.group),
            ..f
        })
    }

    fn fix(&mut self, value: &str) {
        if let Some(f) = self.flow(value) {
            self.groups[f.group].fixed = true;
        }
    }

    fn member(&mut self, group: usize, tensor: &str, axis: usize, per_channel: usize) {
        let g = self.root(group);
        self.groups[g].members.push(GroupMember {
            tensor: tensor.to_string(),
            axis,
            per_channel,
        });
    }

    /// A new group of `channels` written by the weight `w` (and `bias`):
    /// the flow of a conv's or fully connected layer's output.
    fn producer(&mut self, w: &str, channels: usize, bias: Option<&str>) -> Flow {
        let g = self.group(false);
        let b = &mut self.groups[g];
        b.channels = Some(channels);
        b.producers.push(w.to_string());
        b.layers.push(layer_of(w));
        self.member(g, w, 0, 1);
        if let Some(bias) = bias {
            self.member(g, bias, 0, 1);
        }
        Flow {
            group: g,
            flat: false,
        }
    }

    fn union(&mut self, a: usize, b: usize) -> usize {
        let (a, b) = (self.root(a), self.root(b));
        if a != b {
            self.parent[b] = a;
            let moved = std::mem::take(&mut self.groups[b]);
            let into = &mut self.groups[a];
            into.fixed |= moved.fixed;
            into.channels = into.channels.or(moved.channels);
            into.producers.extend(moved.producers);
            into.members.extend(moved.members);
            into.layers.extend(moved.layers);
        }
        a
    }
}

fn layer_of(weight: &str) -> String {
    weight.strip_suffix(".weight").unwrap_or(weight).to_string()
}

/// The prunable channel groups of `graph`, in the order their first
/// producer appears.
pub fn channel_groups(graph: &GraphProto) -> Result<Vec<ChannelGroup>> {
    let dims: HashMap<&str, Vec<usize>> = graph
        .initializer
        .iter()
        .map(|t| {
            (
                t.name.as_str(),
                t.dims.iter().map(|&d| d as usize).collect(),
            )
        })
        .collect();
    let mut walk = Walk::default();
    for input in &graph.input {
        let g = walk.group(true);
        walk.flows.insert(
            input.name.clone(),
            Flow {
                group: g,
                flat: false,
            },
        );
    }
    for node in &graph.node {
        let x = node.input.first().map(String::as_str).unwrap_or("");
        let flow = walk.flow(x);
        let weight = node
            .input
            .get(1)
            .and_then(|w| dims.get(w.as_str()).map(|d| (w.as_str(), d)));
        let out: Option<Flow> = match (node.op_type.as_str(), weight) {
            ("Conv", Some((w, wd))) if wd.len() == 4 => {
                let groups = node.int_attribute("group", 1) as usize;
                let bias = node.input.get(2).filter(|b| dims.contains_key(b.as_str()));
                if groups == 1 {
                    if let Some(f) = flow.filter(|f| !f.flat) {
                        walk.member(f.group, w, 1, 1);
                    } else {
                        walk.fix(x);
                    }
                    Some(walk.producer(w, wd[0], bias.map(String::as_str)))
                } else if let Some(f) = flow.filter(|f| !f.flat && groups == wd[0] && wd[1] == 1) {
                    // Depthwise: output channel c reads input channel c.
                    walk.member(f.group, w, 0, 1);
                    if let Some(bias) = bias {
                        walk.member(f.group, bias, 0, 1);
                    }
                    let g = walk.root(f.group);
                    walk.groups[g].layers.push(layer_of(w));
                    Some(f)
                } else {
                    walk.fix(x);
                    None
                }
            }
            ("Gemm", Some((w, wd))) if wd.len() == 2 && node.int_attribute("transB", 0) == 1 => {
                match flow {
                    Some(f) => {
                        let channels = walk.groups[f.group].channels;
                        match channels.filter(|&c| c > 0 && wd[1] % c == 0) {
                            Some(c) if f.flat || wd[1] == c => {
                                walk.member(f.group, w, 1, wd[1] / c)
                            }
                            _ => walk.fix(x),
                        }
                    }
                    None => walk.fix(x),
                }
                let bias = node.input.get(2).filter(|b| dims.contains_key(b.as_str()));
                Some(walk.producer(w, wd[0], bias.map(String::as_str)))
            }
            ("BatchNormalization", _) => {
                if let Some(f) = flow.filter(|f| !f.flat) {
                    for t in node.input.iter().skip(1) {
                        walk.member(f.group, t, 0, 1);
                    }
                }
                flow
            }
            ("Relu" | "Clip" | "MaxPool" | "AveragePool" | "Identity", _) => flow,
            ("GlobalAveragePool", _) => flow.filter(|f| !f.flat),
            ("ReduceMean", _)
                if node.ints_attribute("axes") == [2, 3]
                    && node.int_attribute("keepdims", 1) == 0 =>
            {
                flow.filter(|f| !f.flat)
            }
            ("Flatten", _) if node.int_attribute("axis", 1) == 1 => {
                flow.map(|f| Flow { flat: true, ..f })
            }
            ("Add", _) if node.input.len() == 2 => match (flow, walk.flow(&node.input[1])) {
                (Some(a), Some(b)) if a.flat == b.flat => Some(Flow {
                    group: walk.union(a.group, b.group),
                    flat: a.flat,
                }),
                _ => None,
            },
            _ => None,
        };
        match out {
            Some(f) => {
                for o in &node.output {
                    walk.flows.insert(o.clone(), f);
                }
            }
            None => {
                // An operator the walk does not follow: channels on either
                // side of it stay whole.
                for value in node.input.iter().chain(&node.output) {
                    walk.fix(value);
                }
            }
        }
    }
    for output in &graph.output {
        walk.fix(&output.name);
    }
    let mut result = Vec::new();
    for g in 0..walk.groups.len() {
        if walk.root(g) != g {
            continue;
        }
        let b = std::mem::take(&mut walk.groups[g]);
        let Some(channels) = b.channels.filter(|_| !b.fixed && !b.producers.is_empty()) else {
            continue;
        };
        for m in &b.members {
            let size = dims.get(m.tensor.as_str()).and_then(|d| d.get(m.axis));
            if size != Some(&(channels * m.per_channel)) {
                return Err(CompressError::Mismatch(format!(
                    "channel groups: `{}` has {:?} entries on axis {} but its group has {channels} channels x {}",
                    m.tensor, size, m.axis, m.per_channel
                )));
            }
        }
        result.push(ChannelGroup {
            channels,
            producers: b.producers,
            members: b.members,
            layers: b.layers,
        });
    }
    Ok(result)
}

/// Looks a member up in `tensors` by name.
pub(crate) fn tensor<'a, T>(tensors: &'a BTreeMap<String, T>, name: &str) -> Result<&'a T> {
    tensors
        .get(name)
        .ok_or_else(|| CompressError::Mismatch(format!("channel pruning: no tensor `{name}`")))
}
