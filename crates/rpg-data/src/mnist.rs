//! The MNIST family (MNIST, Fashion-MNIST, KMNIST): four IDX files, one
//! image and one label file per split. The bundled copy of MNIST and
//! Debian's install of Fashion-MNIST are checked against the canonical
//! files' SHA-256 (of the content, so gzip headers do not matter);
//! MNIST-format files elsewhere (a
//! rotated or noisy variant) are read as they are, normalised with
//! `--normalize` when MNIST's own does not suit them.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::dataset::{Augment, Dataset, ImageSet, Samples, Split};
use crate::error::{DataError, Result};
use crate::idx::{self, IdxArray};
use rpg_core::names::Named;

use crate::kind::DatasetKind;

/// File stems in split order (train images, train labels, test images,
/// test labels) with the SHA-256 of the uncompressed canonical MNIST files.
const MNIST_SHA256: [(&str, &str); 4] = [
    (
        "train-images-idx3-ubyte",
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ),
    (
        "train-labels-idx1-ubyte",
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    ),
    (
        "t10k-images-idx3-ubyte",
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ),
    (
        "t10k-labels-idx1-ubyte",
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ),
];

/// The SHA-256 of the uncompressed canonical Fashion-MNIST files, in the
/// order of [`MNIST_SHA256`]'s names. Debian's `dataset-fashion-mnist`
/// installs these (its `.gz` files differ from upstream's: rewritten gzip
/// headers, the same content).
pub(super) const FASHION_MNIST_SHA256: [&str; 4] = [
    "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
];

/// The MNIST checksums, in the same form.
pub(super) const MNIST_CONTENT: [&str; 4] = [
    MNIST_SHA256[0].1,
    MNIST_SHA256[1].1,
    MNIST_SHA256[2].1,
    MNIST_SHA256[3].1,
];

/// One set of the family: its classes and normalisation.
#[derive(Debug, Clone, Copy)]
pub(super) struct IdxFamily {
    pub classes: u32,
    pub mean: f32,
    pub std: f32,
    /// The canonical content to check the files against (a copy known to
    /// be canonical: the bundled MNIST, Debian's Fashion-MNIST), if any.
    pub verify: Option<&'static [&'static str; 4]>,
}

/// Whether `dir` is the project's bundled MNIST (`datasets/mnist`), whose
/// files must be the canonical ones.
pub(super) fn is_bundled(dir: &Path) -> bool {
    let bundled = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../datasets/mnist");
    let canonical = |p: &Path| p.canonicalize().ok();
    canonical(dir).is_some_and(|d| {
        Some(&d) == canonical(&bundled).as_ref()
            || Some(&d) == canonical(Path::new("datasets/mnist")).as_ref()
    })
}

/// Finds `stem` or `stem.gz` in `dir`.
fn find_idx(dir: &Path, stem: &str) -> Option<PathBuf> {
    [stem.to_string(), format!("{stem}.gz")]
        .into_iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Loads one split: only its two files are read.
pub(super) fn load(
    dataset: DatasetKind,
    dir: &Path,
    family: IdxFamily,
    split: Split,
) -> Result<Dataset> {
    let name = dataset.name();
    let (files, canonical) = match split {
        Split::Train => (&MNIST_SHA256[..2], family.verify.map(|v| &v[..2])),
        Split::Test => (&MNIST_SHA256[2..], family.verify.map(|v| &v[2..])),
    };
    let found: Vec<Option<PathBuf>> = files.iter().map(|(s, _)| find_idx(dir, s)).collect();
    let missing: Vec<&str> = files
        .iter()
        .zip(&found)
        .filter(|(_, f)| f.is_none())
        .map(|((s, _), _)| *s)
        .collect();
    if !missing.is_empty() {
        return Err(DataError::Missing {
            dataset: name.into(),
            dir: dir.to_path_buf(),
            missing: missing.join(", "),
            expected: MNIST_SHA256.map(|(s, _)| format!("{s}[.gz]")).join(", "),
            hint: dataset.hint(),
        });
    }
    let mut arrays = Vec::new();
    for (i, path) in found.into_iter().flatten().enumerate() {
        let bytes = idx::read_maybe_gz(&path)?;
        if let Some(sha) = canonical.map(|c| c[i]) {
            let digest = format!("{:x}", Sha256::digest(&bytes));
            if digest != sha {
                return Err(DataError::corrupt(
                    &path,
                    format!(
                        "SHA-256 {digest} of its content differs from {name}'s {sha}: the file is corrupt or not {name}"
                    ),
                ));
            }
        }
        let array = idx::parse_idx(&path, &bytes)?;
        arrays.push((path, array));
    }
    let set = image_set(&arrays[0], &arrays[1], family.classes)?;
    Ok(Dataset {
        name: name.into(),
        image_size: set.height,
        channels: 1,
        samples: Samples::Memory(set),
        num_classes: family.classes as usize,
        mean: vec![family.mean],
        std: vec![family.std],
        augment: Augment::None,
        class_names: None,
    })
}

/// The images and labels of one split, checked against each other.
fn image_set(
    (image_path, images): &(PathBuf, IdxArray),
    (label_path, labels): &(PathBuf, IdxArray),
    classes: u32,
) -> Result<ImageSet> {
    let [n, h, w] = images.dims[..] else {
        return Err(DataError::corrupt(
            image_path,
            format!(
                "image file has dimensions {:?}, expected [N, H, W]",
                images.dims
            ),
        ));
    };
    if labels.dims != [n] {
        return Err(DataError::corrupt(
            label_path,
            format!(
                "label file has dimensions {:?}, expected [{n}] to match its images",
                labels.dims
            ),
        ));
    }
    if let Some((i, &l)) = labels
        .data
        .iter()
        .enumerate()
        .find(|(_, l)| u32::from(**l) >= classes)
    {
        return Err(DataError::corrupt(
            label_path,
            format!("label {i} is {l}, outside 0..{classes}"),
        ));
    }
    Ok(ImageSet {
        images: images.data.clone(),
        labels: labels.data.iter().map(|&l| u32::from(l)).collect(),
        channels: 1,
        height: h,
        width: w,
    })
}

#[cfg(test)]
mod tests {
    use crate::{DataConfig, DatasetKind, Split};

    /// Debian's `dataset-fashion-mnist` is found without `--data-dir` and
    /// checked against the canonical content (CI installs the package;
    /// elsewhere the test says it has nothing to check).
    #[test]
    fn the_debian_fashion_mnist_is_found_and_verified() {
        let kind = DatasetKind::FashionMnist;
        let system = kind.system_dir().unwrap();
        if !system.is_dir() || std::path::Path::new("datasets/fashion-mnist").exists() {
            eprintln!("no Debian Fashion-MNIST here (apt-get install dataset-fashion-mnist)");
            return;
        }
        let cfg = DataConfig {
            dataset: kind,
            test_limit: Some(10),
            ..DataConfig::default()
        };
        assert_eq!(cfg.dir(), system);
        assert!(kind.is_system_dir(&cfg.dir()));
        let test = cfg.load_split(Split::Test).unwrap();
        assert_eq!(
            (test.len(), test.num_classes, test.image_size),
            (10, 10, 28)
        );
        // A copy elsewhere is read as it is: no checksum is asked of it.
        let dir = tempfile::tempdir().unwrap();
        for name in ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"] {
            std::fs::copy(system.join(name), dir.path().join(name)).unwrap();
        }
        assert!(!kind.is_system_dir(dir.path()));
        let copy = kind.load_split(dir.path(), 28, Split::Test).unwrap();
        assert_eq!(copy.len(), 10_000);
    }
}
