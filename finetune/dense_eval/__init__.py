"""Dense evaluations on frozen backbone features (Zhang & Maire, NeurIPS 2020, Sec. 5.2 and 5.3):
DAVIS mask tracking by label propagation, and K-means segment search on PASCAL VOC."""
