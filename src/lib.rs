//! edgeflow: streaming machine learning for IoT/edge gateways.
