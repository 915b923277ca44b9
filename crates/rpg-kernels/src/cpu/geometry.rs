//! The shape of one 2-D convolution and the index arithmetic every CPU conv
//! kernel shares (output size, valid ranges, column-matrix pitch).

/// The shape of one convolution; square stride, padding and dilation as in
/// `candle_nn::Conv2dConfig`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConvGeometry {
    pub batch: usize,
    pub in_channels: usize,
    pub height: usize,
    pub width: usize,
    pub out_channels: usize,
    pub kernel_h: usize,
    pub kernel_w: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl ConvGeometry {
    pub(crate) fn out_h(&self) -> usize {
        (self.height + 2 * self.padding - self.dilation * (self.kernel_h - 1) - 1) / self.stride + 1
    }
    pub(crate) fn out_w(&self) -> usize {
        (self.width + 2 * self.padding - self.dilation * (self.kernel_w - 1) - 1) / self.stride + 1
    }
    /// Output pixels per image.
    pub(crate) fn pixels(&self) -> usize {
        self.out_h() * self.out_w()
    }
    pub(crate) fn in_per_group(&self) -> usize {
        self.in_channels / self.groups
    }
    pub(crate) fn out_per_group(&self) -> usize {
        self.out_channels / self.groups
    }
    /// Rows of one group's column matrix: `in_per_group * kh * kw`.
    pub(crate) fn col_rows(&self) -> usize {
        self.in_per_group() * self.kernel_h * self.kernel_w
    }
    pub(crate) fn image_len(&self) -> usize {
        self.in_channels * self.height * self.width
    }
    pub(crate) fn out_image_len(&self) -> usize {
        self.out_channels * self.pixels()
    }
    /// A 1x1, stride-1, unpadded conv: the input image already is the column
    /// matrix, no im2col needed.
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel_h == 1 && self.kernel_w == 1 && self.stride == 1 && self.padding == 0
    }
    /// No images, or no values in an input or output image (zero channels):
    /// every sum is empty, so the kernels' chunked loops are skipped.
    pub(crate) fn is_empty(&self) -> bool {
        self.batch == 0 || self.image_len() == 0 || self.out_image_len() == 0
    }
    /// A 3x3 kernel at stride 1 with padding 1, no dilation and one group:
    /// output maps the size of the input, the shape Winograd's and the
    /// direct kernels compute.
    pub(crate) fn is_same_3x3(&self) -> bool {
        self.kernel_h == 3
            && self.kernel_w == 3
            && self.stride == 1
            && self.padding == 1
            && self.dilation == 1
            && self.groups == 1
    }
    /// Distance between rows of the column matrix, in elements: the pixel
    /// count rounded up to whole cache lines, plus one line when that is an
    /// even number of lines. The products walk this matrix down its rows, and
    /// a power-of-two row pitch (1024 pixels: 4 KiB) maps every row onto the
    /// same few L1 sets; an odd number of lines spreads them over all sets.
    pub(crate) fn col_pitch(&self) -> usize {
        spread_pitch(self.pixels())
    }
    /// Length of one image's column-matrix buffer (none for pointwise).
    pub(crate) fn col_len(&self) -> usize {
        if self.is_pointwise() {
            0
        } else {
            self.col_rows() * self.col_pitch()
        }
    }
    /// Range of output columns `ow` whose input column `ow*s + j*d - pad`
    /// lies inside the image, for kernel column offset `j*d`.
    pub(crate) fn valid_cols(&self, offset: usize) -> (usize, usize) {
        valid_range(self.width, self.out_w(), self.stride, self.padding, offset)
    }
}

/// A row pitch of at least `len` elements that is an odd number of cache
/// lines (see [`ConvGeometry::col_pitch`]).
pub(crate) fn spread_pitch(len: usize) -> usize {
    const LINE: usize = 64 / std::mem::size_of::<f32>();
    (len.div_ceil(LINE) | 1) * LINE
}

/// `lo..hi` of outputs `o` with `o*stride + offset - padding` in `0..size`.
pub(crate) fn valid_range(
    size: usize,
    out: usize,
    stride: usize,
    padding: usize,
    offset: usize,
) -> (usize, usize) {
    let lo = if padding > offset {
        (padding - offset).div_ceil(stride)
    } else {
        0
    };
    let hi = if size + padding > offset {
        (size + padding - offset).div_ceil(stride)
    } else {
        0
    };
    (lo.min(out), hi.min(out).max(lo.min(out)))
}
