//! The data sets this build reads: the one list of their names.

use rpg_core::names::Named;

/// A data set this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DatasetKind {
    /// MNIST (bundled in `datasets/mnist`).
    #[default]
    Mnist,
    /// Fashion-MNIST (MNIST's format).
    FashionMnist,
    /// Kuzushiji-MNIST (MNIST's format).
    Kmnist,
    /// CIFAR-10, binary version.
    Cifar10,
    /// CIFAR-100, binary version.
    Cifar100,
    /// An image folder: `train/` and `val/`, one folder per class.
    Folder,
}

impl Named for DatasetKind {
    const WHAT: &'static str = "dataset";
    const ALL: &'static [Self] = &[
        DatasetKind::Mnist,
        DatasetKind::FashionMnist,
        DatasetKind::Kmnist,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
        DatasetKind::Folder,
    ];

    fn name(self) -> &'static str {
        match self {
            DatasetKind::Mnist => "mnist",
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Kmnist => "kmnist",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
            DatasetKind::Folder => "folder",
        }
    }
}

rpg_core::named_text_impls!(DatasetKind);

impl DatasetKind {
    /// Where to get the data set's files.
    pub fn hint(self) -> &'static str {
        match self {
            DatasetKind::Mnist => {
                "the bundled copy lives in datasets/mnist; see datasets/README.md"
            }
            DatasetKind::FashionMnist => {
                "install Debian's package (apt-get install dataset-fashion-mnist: rpg then finds /usr/share/datasets/fashion-mnist) or get them from https://github.com/zalandoresearch/fashion-mnist (data/fashion); see datasets/README.md"
            }
            DatasetKind::Kmnist => {
                "get them from https://github.com/rois-codh/kmnist (MNIST format); see datasets/README.md"
            }
            DatasetKind::Cifar10 => {
                "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz and unpack it into the data directory (`data_dir`); see datasets/README.md"
            }
            DatasetKind::Cifar100 => {
                "get the binary version from https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz and unpack it into the data directory (`data_dir`); see datasets/README.md"
            }
            DatasetKind::Folder => {
                "arrange images as ImageNet is (one folder per class); see datasets/README.md"
            }
        }
    }

    /// Where a system package installs this data set, if one does
    /// (Debian's `dataset-fashion-mnist`).
    pub fn system_dir(self) -> Option<&'static std::path::Path> {
        match self {
            DatasetKind::FashionMnist => {
                Some(std::path::Path::new("/usr/share/datasets/fashion-mnist"))
            }
            _ => None,
        }
    }

    /// Whether `dir` is this data set's system install.
    pub fn is_system_dir(self, dir: &std::path::Path) -> bool {
        let canonical = |p: &std::path::Path| p.canonicalize().ok();
        self.system_dir()
            .and_then(canonical)
            .is_some_and(|system| canonical(dir) == Some(system))
    }

    /// Whether images are decoded from files and resized (the only kind
    /// whose image size is chosen).
    pub fn is_folder(self) -> bool {
        self == DatasetKind::Folder
    }
}
