//! The network's architecture and its parameter layout: one table per layer (rows = output
//! units, width = fan-in + 1, the bias last), the per-layer and flat views, and the seeded
//! Glorot initialiser the shards and the workers share.

use serde::{Deserialize, Serialize};

use super::{BUILTIN_CLASSES, BUILTIN_FEATURES, MNIST_CLASSES};
use crate::seed::mix64;

/// Network architecture: `input → hidden[0] → … → classes`.
///
/// Hidden layers use ReLU; the output layer is a softmax over `classes`.
/// `hidden` may be empty (multinomial logistic regression).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arch {
    /// Number of input features `d`.
    pub input: usize,
    /// Widths of the hidden (ReLU) layers, in order.
    pub hidden: Vec<usize>,
    /// Number of classes (output units). Labels are `u8`, so at most 256.
    pub classes: usize,
}

/// Shape of one layer's parameter table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerShape {
    /// Number of inputs of the layer.
    pub fan_in: usize,
    /// Number of output units (= table rows).
    pub fan_out: usize,
}

impl LayerShape {
    /// Table rows (= `fan_out`).
    pub fn rows(&self) -> usize {
        self.fan_out
    }
    /// Table width (= `fan_in + 1`: weights then bias).
    pub fn width(&self) -> usize {
        self.fan_in + 1
    }
    /// Number of parameters (`rows * width`).
    pub fn len(&self) -> usize {
        self.rows() * self.width()
    }
    /// True when the layer has no parameters.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Read-only view of one layer's parameters (row-major
/// `fan_out × (fan_in + 1)`, bias last).
#[derive(Debug, Clone, Copy)]
pub struct LayerView<'a> {
    /// The layer's shape.
    pub shape: LayerShape,
    /// The raw table, `shape.len()` values.
    pub data: &'a [f32],
}

impl<'a> LayerView<'a> {
    /// Weight from input `i` to output unit `o`.
    pub fn weight(&self, o: usize, i: usize) -> f32 {
        assert!(i < self.shape.fan_in, "input index out of range");
        self.data[o * self.shape.width() + i]
    }
    /// Bias of output unit `o`.
    pub fn bias(&self, o: usize) -> f32 {
        self.data[o * self.shape.width() + self.shape.fan_in]
    }
    /// Table row `o` (`fan_in` weights then the bias).
    pub fn row(&self, o: usize) -> &'a [f32] {
        let w = self.shape.width();
        &self.data[o * w..(o + 1) * w]
    }
}

impl Arch {
    /// Builds an architecture.
    pub fn new(input: usize, hidden: &[usize], classes: usize) -> Self {
        Arch {
            input,
            hidden: hidden.to_vec(),
            classes,
        }
    }

    /// The recommended architecture for the built-in synthetic data:
    /// `64 → 128 → 128 → 10` (≈ 26k parameters).
    pub fn builtin() -> Self {
        Arch::new(BUILTIN_FEATURES, &[128, 128], BUILTIN_CLASSES)
    }

    /// The MNIST / Fashion-MNIST architecture `784 → 256 → 256 → 10`
    /// (≈ 270k parameters).
    pub fn mnist() -> Self {
        Arch::new(784, &[256, 256], MNIST_CLASSES)
    }

    /// Number of parameter layers (`hidden.len() + 1`).
    pub fn num_layers(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Shape of layer `l`.
    ///
    /// # Panics
    /// If `l >= num_layers()`.
    pub fn layer(&self, l: usize) -> LayerShape {
        assert!(l < self.num_layers(), "layer {l} out of range");
        let fan_in = if l == 0 {
            self.input
        } else {
            self.hidden[l - 1]
        };
        let fan_out = if l == self.hidden.len() {
            self.classes
        } else {
            self.hidden[l]
        };
        LayerShape { fan_in, fan_out }
    }

    /// Shapes of all layers, in order.
    pub fn layers(&self) -> Vec<LayerShape> {
        (0..self.num_layers()).map(|l| self.layer(l)).collect()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.layers().iter().map(LayerShape::len).sum()
    }

    /// Multiply-add count of one forward pass per sample (`Σ fan_in·fan_out`);
    /// forward+backward training costs `2·(3·macs − fan_in₀·fan_out₀)` FLOP
    /// (no delta is propagated into the input).
    pub fn macs_per_sample(&self) -> usize {
        self.layers().iter().map(|s| s.fan_in * s.fan_out).sum()
    }

    /// Checks the architecture: `input ≥ 1`, every hidden width `≥ 1`,
    /// `2 ≤ classes ≤ 256`.
    pub fn validate(&self) -> Result<(), String> {
        if self.input == 0 {
            return Err("input dimension must be >= 1".into());
        }
        if self.hidden.contains(&0) {
            return Err("hidden layer widths must be >= 1".into());
        }
        if !(2..=256).contains(&self.classes) {
            return Err(format!("classes must be in 2..=256, got {}", self.classes));
        }
        Ok(())
    }

    /// Panics with a clear message if `params` does not match the layer
    /// shapes (caller bug).
    pub fn check_params(&self, params: &[Vec<f32>]) {
        assert_eq!(
            params.len(),
            self.num_layers(),
            "expected {} parameter layers, got {}",
            self.num_layers(),
            params.len()
        );
        for (l, p) in params.iter().enumerate() {
            let s = self.layer(l);
            assert_eq!(
                p.len(),
                s.len(),
                "layer {l}: expected {} x {} = {} parameters, got {}",
                s.rows(),
                s.width(),
                s.len(),
                p.len()
            );
        }
    }

    /// All layers initialised with [`init_layer`] from `seed`.
    pub fn init_params(&self, seed: u64) -> Vec<Vec<f32>> {
        self.layers()
            .iter()
            .enumerate()
            .map(|(l, s)| init_layer(l, s.fan_in, s.fan_out, seed))
            .collect()
    }

    /// All-zero parameters (or gradient buffers) of the right shapes.
    pub fn zeros(&self) -> Vec<Vec<f32>> {
        self.layers().iter().map(|s| vec![0.0; s.len()]).collect()
    }

    /// View of layer `l` of `params`.
    pub fn view<'a>(&self, params: &'a [Vec<f32>], l: usize) -> LayerView<'a> {
        let shape = self.layer(l);
        assert_eq!(params[l].len(), shape.len(), "layer {l} has the wrong size");
        LayerView {
            shape,
            data: &params[l],
        }
    }

    /// Offsets of each layer in the flat parameter vector, plus the total as
    /// the last element (`num_layers() + 1` entries).
    pub fn flat_offsets(&self) -> Vec<usize> {
        let mut off = vec![0usize];
        for s in self.layers() {
            off.push(off.last().copied().unwrap_or(0) + s.len());
        }
        off
    }

    /// Concatenates all layers (layer 0 first) into one flat vector.
    pub fn flatten(&self, params: &[Vec<f32>]) -> Vec<f32> {
        self.check_params(params);
        params.concat()
    }

    /// Splits a flat vector produced by [`Arch::flatten`] back into layers.
    ///
    /// # Panics
    /// If `flat.len() != num_params()`.
    pub fn unflatten(&self, flat: &[f32]) -> Vec<Vec<f32>> {
        assert_eq!(flat.len(), self.num_params(), "flat parameter length");
        let off = self.flat_offsets();
        off.windows(2).map(|w| flat[w[0]..w[1]].to_vec()).collect()
    }
}

/// Initial parameters of one layer table: row-major
/// `fan_out × (fan_in + 1)`, weights i.i.d. Glorot-uniform
/// `U(−a, a)` with `a = sqrt(6 / (fan_in + fan_out))`, biases 0: the table initialiser
/// [`layer_init`], filled in.
///
/// Depends only on its arguments (each value is a hash of `(seed, layer_index, row, column)`,
/// see `ps_proto::init`), so the shards produce the same tables the workers do and nobody
/// pushes the initial model. Glorot (rather than He) is used for every layer, including the ReLU
/// ones, because it is also right for the softmax layer and, for the shallow nets used here (2
/// hidden layers), trains as fast as He.
pub fn init_layer(layer_index: usize, fan_in: usize, fan_out: usize, seed: u64) -> Vec<f32> {
    let width = fan_in + 1;
    let mut out = vec![0.0f32; fan_out * width];
    if fan_in == 0 || fan_out == 0 {
        return out;
    }
    let init = layer_init(fan_in, fan_out, seed);
    ps_proto::init::fill(init, layer_index as u32, 0, width as u32, &mut out);
    out
}

/// The initialiser of layer tables (see [`init_layer`]); the table id is the layer index.
pub fn layer_init(fan_in: usize, fan_out: usize, seed: u64) -> ps_proto::Init {
    ps_proto::Init::Glorot {
        bound: (6.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32,
        fan_in: fan_in as u32,
        seed: mix64(seed ^ 0x4D4C_5049_4E49_5400),
    }
}
