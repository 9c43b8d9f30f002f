"""Faces: detection (``faces`` stage: ``face_bboxes``, ``num_faces``) and blurring at reshard."""
from curation.faces.blur import blur_boxes, blur_image_bytes
from curation.faces.detect import HaarDetector, YuNetDetector, make_detector

__all__ = ["HaarDetector", "YuNetDetector", "blur_boxes", "blur_image_bytes", "make_detector"]
