"""Which of ImageNet-1k's 1000 classes are pets, without Keras (`catdog audit` reads them on LiteRT alone).

Indices 151-268 are dog breeds; 281-285 tabby, tiger cat, Persian, Siamese, Egyptian cat.
"""

DOG_CLASSES, CAT_CLASSES = tuple(range(151, 269)), tuple(range(281, 286))
PET_CLASSES = DOG_CLASSES + CAT_CLASSES
