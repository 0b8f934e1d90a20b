"""The seed README's loader API: ``from dalle2_pytorch.dataloaders import ImageEmbeddingDataset,
create_image_embedding_dataloader``.  The code lives in :mod:`dalle2_pytorch.data`; this package keeps the old
import path working."""

from dalle2_pytorch.data.image_folder import ImageFolderDataset
from dalle2_pytorch.data.prior_embeddings import ClipRetrievalEmbeddings, PriorEmbeddingLoader, make_splits
from dalle2_pytorch.data.webdataset_loader import ImageEmbeddingDataset, create_image_embedding_dataloader

__all__ = [
    "ImageEmbeddingDataset",
    "create_image_embedding_dataloader",
    "ClipRetrievalEmbeddings",
    "PriorEmbeddingLoader",
    "make_splits",
    "ImageFolderDataset",
]
