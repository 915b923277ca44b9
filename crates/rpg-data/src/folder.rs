//! Image-folder data sets: `root/<split>/<class>/*.{png,jpg,jpeg}` (the
//! ImageNet layout). Images are decoded on the loader threads.

use std::path::{Path, PathBuf};

use crate::dataset::{Augment, Dataset, FolderSet, Samples, Split};
use crate::error::{DataError, Result};

/// Whether a file is an image the readers decode (PNG or JPEG, by name).
pub fn is_image(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("png" | "jpg" | "jpeg")
    )
}

/// Loads one split of an image folder (`train/` or `val/` under `dir`);
/// the other split's class folders are listed to check they agree.
pub(super) fn load(dir: &Path, image_size: usize, split: Split) -> Result<Dataset> {
    let (train_dir, test_dir) = (dir.join("train"), dir.join("val"));
    if !train_dir.is_dir() || !test_dir.is_dir() {
        return Err(DataError::Missing {
            dataset: "folder".into(),
            dir: dir.to_path_buf(),
            missing: "train/ or val/".into(),
            expected: "train/<class>/*.{png,jpg} and val/<class>/*.{png,jpg}".into(),
            hint: crate::kind::DatasetKind::Folder.hint(),
        });
    }
    let (set, augment) = match split {
        Split::Train => (scan(&train_dir)?, Augment::ResizedCropFlip),
        Split::Test => (scan(&test_dir)?, Augment::None),
    };
    let other = match split {
        Split::Train => class_names(&test_dir)?,
        Split::Test => class_names(&train_dir)?,
    };
    if set.classes != other {
        return Err(DataError::corrupt(
            &test_dir,
            "val/ has other class folders than train/",
        ));
    }
    Ok(Dataset {
        name: "folder".into(),
        num_classes: set.classes.len(),
        class_names: Some(set.classes.clone()),
        samples: Samples::Folder(set),
        channels: 3,
        image_size,
        mean: vec![0.485, 0.456, 0.406],
        std: vec![0.229, 0.224, 0.225],
        augment,
    })
}

/// The class folder names of a split directory, sorted.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let mut classes: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().is_dir())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    classes.sort();
    Ok(classes)
}

/// Lists a split directory. Fails when it has no class folders or a class
/// folder has no images.
pub fn scan(dir: &Path) -> Result<FolderSet> {
    let classes = class_names(dir)?;
    if classes.is_empty() {
        return Err(DataError::corrupt(
            dir,
            "no class folders: expected one folder of images per class",
        ));
    }
    let mut set = FolderSet {
        classes: classes.clone(),
        paths: Vec::new(),
        labels: Vec::new(),
    };
    for (label, class) in classes.iter().enumerate() {
        let class_dir = dir.join(class);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&class_dir)
            .map_err(|e| DataError::io(&class_dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        if files.is_empty() {
            return Err(DataError::corrupt(
                &class_dir,
                "class folder has no .png/.jpg/.jpeg images",
            ));
        }
        files.sort();
        set.labels
            .extend(std::iter::repeat_n(label as u32, files.len()));
        set.paths.extend(files);
    }
    Ok(set)
}

/// Decodes an image's bytes as RGB8 (`path` names them in errors). The
/// decoder's default limits bound what a header may make it allocate.
pub fn decode_bytes(path: &Path, bytes: &[u8]) -> Result<image::RgbImage> {
    image::load_from_memory(bytes)
        .map(|img| img.to_rgb8())
        .map_err(|e| DataError::corrupt(path, format!("cannot decode image: {e}")))
}

/// Decodes an image as RGB8.
pub fn decode(path: &Path) -> Result<image::RgbImage> {
    image::open(path)
        .map(|img| img.to_rgb8())
        .map_err(|e| DataError::corrupt(path, format!("cannot decode image: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scans_classes_and_rejects_broken_images() {
        let dir = tempfile::tempdir().unwrap();
        for (class, n) in [("cat", 2), ("dog", 1)] {
            std::fs::create_dir_all(dir.path().join(class)).unwrap();
            for i in 0..n {
                image::RgbImage::from_pixel(5, 4, image::Rgb([i as u8 * 100, 0, 0]))
                    .save(dir.path().join(class).join(format!("{i}.png")))
                    .unwrap();
            }
        }
        let set = scan(dir.path()).unwrap();
        assert_eq!(set.classes, vec!["cat", "dog"]);
        assert_eq!(set.labels, vec![0, 0, 1]);
        assert_eq!(decode(&set.paths[0]).unwrap().dimensions(), (5, 4));

        let broken = dir.path().join("dog").join("broken.jpg");
        std::fs::write(&broken, b"not a jpeg").unwrap();
        assert!(
            decode(&broken)
                .unwrap_err()
                .to_string()
                .contains("cannot decode")
        );
        std::fs::create_dir_all(dir.path().join("empty_class")).unwrap();
        assert!(
            scan(dir.path())
                .unwrap_err()
                .to_string()
                .contains("no .png")
        );
        let empty = tempfile::tempdir().unwrap();
        assert!(
            scan(empty.path())
                .unwrap_err()
                .to_string()
                .contains("no class folders")
        );
    }
}
