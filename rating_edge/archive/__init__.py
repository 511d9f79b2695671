"""Scoring stored DICOM studies (folders or PACS over DICOMweb) on Ray, results as Parquet and DICOM SR."""
