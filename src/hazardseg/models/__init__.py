from hazardseg.models.aux_head import AuxSegmentationHead
from hazardseg.models.base import SegmentationNetwork
from hazardseg.models.distance_head import DistanceHead
from hazardseg.models.head import Head
from hazardseg.maps import resize
from hazardseg.models.outputs import SegmentationOutput, features_to_input
from hazardseg.models.mask2former import Mask2FormerNet
from hazardseg.models.segmentation_net import SegmentationNet

__all__ = ["AuxSegmentationHead", "DistanceHead", "Head", "Mask2FormerNet", "SegmentationNet", "SegmentationNetwork", "SegmentationOutput",
           "features_to_input", "resize"]
