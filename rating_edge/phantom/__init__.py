"""Synthetic finger-joint ultrasound with known grades and scanner-screen video (numpy + OpenCV)."""
