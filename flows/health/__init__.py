"""Health management (issue 19): patients registered by hand at the health-management centre
(``cards``), each department's booking link into the hospital's appointment system
(``booking_links``), and the health-check packages a patient may ask to book (``packages``)."""
