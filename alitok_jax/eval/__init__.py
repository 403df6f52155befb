"""Evaluation (docs/EVALUATION.md): the FID Inception's features (`features`), FID / IS /
precision-recall (`fid`, `inception_score`, `precision_recall`), the ADM npz format
(`reference_batch`), PSNR / SSIM (`image_metrics`), and the `fid`, `rfid` and `reconstruct`
modes."""
