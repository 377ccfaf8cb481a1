from hazardseg.models.aux_head import AuxSegmentationHead
from hazardseg.models.distance_head import DistanceHead
from hazardseg.models.segmentation_net import SegmentationNet

__all__ = ["AuxSegmentationHead", "DistanceHead", "SegmentationNet"]
