"""VOC- and COCO-format data sets: the places where file coordinates become internal boxes."""

from sppdet.data.classes import VOC_CLASSES, read_class_file
from sppdet.data.coco import COCODataset
from sppdet.data.voc import Annotation, BoxIssue, VOCDataset, read_id_list, read_image, resolve_root

__all__ = [
    "VOC_CLASSES", "read_class_file", "Annotation", "BoxIssue", "VOCDataset", "COCODataset",
    "read_id_list", "read_image", "resolve_root",
]
