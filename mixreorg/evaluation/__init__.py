"""Zero-shot evaluation: sliding-window inference, protocols, mIoU and classification accuracy."""
