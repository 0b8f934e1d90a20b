"""Data: the built-in toy shapes set and its judge, image preprocessing, image folders, webdataset shards with
CLIP embeddings (decoder training: per-shard or clip-retrieval embedding files) and clip-retrieval embedding folders
(prior training)."""

from dalle2_pytorch.images import resize_image_to

from .embedding_files import EmbeddingShapeError
from .image_folder import ImageFolderDataset, list_image_files
from .preprocess import ImagePreprocessor, load_image
from .prior_embeddings import ClipRetrievalEmbeddings, PriorEmbeddingLoader, make_splits, rank_range
from .shards import NoDataError, ReadStats, expand_urls
from .toy import ShapeSpec, ToyShapesDataset, caption_for, caption_templates, parse_caption, render_shape, vocabulary
from .toy_judge import Judgement, faithfulness, judge_image, matches
from .webdataset_loader import ImageEmbeddingDataset, create_image_embedding_dataloader

__all__ = [
    "ToyShapesDataset", "ShapeSpec", "render_shape", "caption_for", "parse_caption", "caption_templates", "vocabulary",
    "judge_image", "matches", "faithfulness", "Judgement",
    "ImagePreprocessor", "load_image", "resize_image_to",
    "ImageFolderDataset", "list_image_files",
    "ImageEmbeddingDataset", "create_image_embedding_dataloader", "expand_urls", "ReadStats", "NoDataError",
    "EmbeddingShapeError",
    "ClipRetrievalEmbeddings", "PriorEmbeddingLoader", "make_splits", "rank_range",
]
