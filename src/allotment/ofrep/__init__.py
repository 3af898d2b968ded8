"""The OpenFeature Remote Evaluation Protocol (OFREP): features and limits as flags."""
